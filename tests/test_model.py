"""The Decision Transformer: token order without leaks, masking, heads, bins, encoders."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, TanhGaussianPolicy, return_bin_edges_for
from ogm.models.encoders import NatureCNN
from ogm.train.offline import OfflineConfig, build_model


def make_model(discrete: bool = True, obs_shape=(5,), **kw) -> DecisionTransformer:
    torch.manual_seed(0)
    action = (
        {"act_dim": 4}
        if discrete
        else {"act_dim": 2, "action_low": (-1.0, 0.0), "action_high": (1.0, 3.0)}
    )
    config = DTConfig(
        obs_shape=obs_shape,
        discrete=discrete,
        return_bin_edges=return_bin_edges_for(0.0, 10.0, 11),
        n_layer=2,
        n_head=2,
        n_embd=32,
        dropout=0.0,
        **action,
        **kw,
    )
    return DecisionTransformer(config).eval()


def inputs(model: DecisionTransformer, B: int = 3, K: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    obs = torch.randn(B, K, *cfg.obs_shape, generator=g)
    if cfg.discrete:
        actions = torch.randint(0, cfg.act_dim, (B, K), generator=g)
    else:
        actions = torch.rand(B, K, cfg.act_dim, generator=g)
    rtg = torch.rand(B, K, 1, generator=g) * 10
    timesteps = torch.arange(K).repeat(B, 1)
    return rtg, obs, actions, timesteps


@pytest.mark.parametrize("discrete", [True, False])
def test_no_information_leaks_through_the_token_order(discrete):
    """Return head at s_t must not see R_t; action head at R_t must not see a_t."""
    model = make_model(discrete, use_timesteps=True)
    rtg, obs, actions, timesteps = inputs(model)
    base = model(rtg, obs, actions, timesteps)
    t = 3
    rtg2 = rtg.clone()
    rtg2[:, t:] += 5.0
    actions2 = torch.roll(actions, 1, dims=0)
    out_r = model(rtg2, obs, actions, timesteps)
    out_a = model(rtg, obs, torch.cat((actions[:, :t], actions2[:, t:]), 1), timesteps)
    # return logits up to t are blind to R_t and later
    torch.testing.assert_close(out_r.return_logits[:, : t + 1], base.return_logits[:, : t + 1])
    assert not torch.allclose(out_r.return_logits[:, t + 1 :], base.return_logits[:, t + 1 :])
    # the action at t reads R_t, but not a_t or anything later
    head = (lambda p: p.logits) if discrete else (lambda p: p.mean)
    assert not torch.allclose(head(out_r.policy)[:, t], head(base.policy)[:, t])
    torch.testing.assert_close(head(out_a.policy)[:, : t + 1], head(base.policy)[:, : t + 1])


@pytest.mark.parametrize("obs_shape", [(5,), (3, 4, 5)])
def test_left_padding_is_invisible(obs_shape):
    """A short sequence left-padded to K gives the same outputs as the sequence alone,
    whatever the padded positions hold."""
    model = make_model(obs_shape=obs_shape, use_timesteps=True)
    K, n = 7, 4
    real = inputs(model, B=2, K=K, seed=0)
    junk = inputs(model, B=2, K=K, seed=1)
    padded = [
        torch.cat((j[:, : K - n], r[:, K - n :]), dim=1) for r, j in zip(real, junk, strict=True)
    ]
    mask = torch.zeros(2, K, dtype=torch.bool)
    mask[:, K - n :] = True
    out = model(*padded, mask)
    short = model(*(r[:, K - n :] for r in real))
    torch.testing.assert_close(out.return_logits[:, -n:], short.return_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.policy.logits[:, -n:], short.policy.logits, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out.return_logits).all() and torch.isfinite(out.policy.logits).all()


def test_return_token_tells_nearby_returns_apart_at_initialisation():
    """A linear return embedding with a zero bias gives LayerNorm(w r) = LayerNorm(w) for
    every r > 0: one token for all positive returns. The hinge encoder gives every return
    of the data's range (scaled into [0, 1]) its own token, one reward apart included."""
    model = make_model(reward_scale=1 / 50)
    returns = torch.arange(51.0).view(51, 1, 1)  # 0, 1, ..., 50
    with torch.no_grad():
        tokens = model.ln_in(model.embed_return(returns))[:, 0]  # (51, C), norm sqrt(C)
    steps = (tokens[1:] - tokens[:-1]).norm(dim=-1)
    assert steps.min() > 0.01  # measured 0.044 with n_embd = 32 (norm 5.7)
    # so the policy depends on the return asked for before any training
    obs, steps0 = torch.zeros(2, 1, 5), torch.zeros(2, 1, dtype=torch.long)
    out = model(torch.tensor([10.0, 25.0]).view(2, 1, 1), obs, steps0, steps0)
    assert not torch.allclose(out.policy.logits[0], out.policy.logits[1], atol=1e-3)


def episode(rewards: list[float], truncated: bool) -> Trajectory:
    T = len(rewards)
    return Trajectory(
        observations=np.zeros((T + 1, 3), np.float32),
        actions=np.zeros(T, np.int64),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.arange(T) == T - 1 if not truncated else np.zeros(T, bool),
        truncations=np.arange(T) == T - 1 if truncated else np.zeros(T, bool),
    )


def test_build_model_reads_scale_and_clock_off_the_data():
    """reward_scale = 1 / max |return-to-go|; a timestep embedding, sized to the longest
    episode, exactly when a time limit cut a demonstration; explicit values win."""
    action_space = gym.spaces.Discrete(2)
    config = OfflineConfig(n_layer=1, n_embd=16)
    ended = [episode([1.0, -4.0, 1.0], truncated=False), episode([2.0] * 5, truncated=False)]
    model = build_model(config, ended, action_space)
    assert model.config.reward_scale == pytest.approx(1 / 10)  # rtg 10 at the start of the 2nd
    assert not model.config.use_timesteps and model.config.max_ep_len == 5
    cut = [*ended, episode([-20.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], truncated=True)]
    model = build_model(config, cut, action_space)
    assert model.config.reward_scale == pytest.approx(1 / 14)  # |-14|
    assert model.config.use_timesteps and model.config.max_ep_len == 7
    explicit = config.model_copy(update={"reward_scale": 0.5, "use_timesteps": False})
    model = build_model(explicit.model_copy(update={"max_ep_len": 9}), cut, action_space)
    assert model.config.reward_scale == 0.5 and not model.config.use_timesteps
    assert model.config.max_ep_len == 9
    zero = build_model(config, [episode([0.0, 0.0], truncated=False)], action_space)
    assert zero.config.reward_scale == 1.0  # nothing to scale


def test_return_bins_cover_the_range_and_clamp():
    edges = return_bin_edges_for(-1.0, 3.0, 5)
    np.testing.assert_allclose(np.diff(edges), 1.0)
    model = DecisionTransformer(
        DTConfig(obs_shape=(1,), act_dim=2, discrete=True, return_bin_edges=edges)
    )
    np.testing.assert_allclose(model.return_bin_centers.numpy(), [-1.0, 0.0, 1.0, 2.0, 3.0])
    index = model.return_bin_index(torch.tensor([-5.0, -1.0, -0.51, -0.49, 2.49, 3.0, 3.2, 99.0]))
    assert index.tolist() == [0, 0, 0, 1, 3, 4, 4, 4]  # top return -> top bin
    assert return_bin_edges_for(2.0, 2.0, 3)[0] < 2.0 < return_bin_edges_for(2.0, 2.0, 3)[-1]


def test_tanh_gaussian_log_prob_is_an_exact_density():
    """log_prob integrates to one over the box and agrees with torch's transformed normal."""
    mean, log_std = torch.tensor([[0.3, -0.5]]), torch.tensor([[-0.7, 0.2]])
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0])
    policy = TanhGaussianPolicy(mean, log_std, low, high)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [
            torch.distributions.TanhTransform(),
            torch.distributions.AffineTransform((low + high) / 2, (high - low) / 2),
        ],
    )
    a = policy.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        policy.log_prob(a), reference.log_prob(a).sum(-1), atol=1e-4, rtol=1e-4
    )
    for d in range(2):  # marginal density per dimension integrates to 1
        grid = torch.linspace(low[d] + 1e-5, high[d] - 1e-5, 200001)
        one = TanhGaussianPolicy(
            mean[:, d : d + 1], log_std[:, d : d + 1], low[d : d + 1], high[d : d + 1]
        )
        density = one.log_prob(grid[:, None].unsqueeze(0)).exp()
        assert abs(torch.trapezoid(density, grid).item() - 1.0) < 2e-3
    # the one-sample entropy estimate is unbiased: its mean is the entropy -E[log p]
    g = torch.Generator().manual_seed(1)
    big = TanhGaussianPolicy(mean.expand(20000, 2), log_std.expand(20000, 2), low, high)
    estimate = big.entropy(g).mean().item()
    samples = reference.sample((20000,))
    assert abs(estimate + reference.log_prob(samples).sum(-1).mean().item()) < 0.05
    # targets on the bounds are clamped inside, giving finite log-likelihoods
    assert torch.isfinite(policy.log_prob(torch.stack((low, high)))).all()
    torch.testing.assert_close(
        policy.mode(), torch.tanh(mean) * (high - low) / 2 + (high + low) / 2
    )


def test_log_std_is_bounded():
    model = make_model(discrete=False)
    with torch.no_grad():
        model.action_head.bias.fill_(1e3)
    out = model(*inputs(model))
    assert out.policy.log_std.max() <= 2.0 and out.policy.log_std.min() >= -5.0
    with torch.no_grad():
        model.action_head.bias.fill_(-1e3)
    assert model(*inputs(model)).policy.log_std.min() >= -5.0


def test_categorical_head():
    model = make_model()
    rtg, obs, actions, timesteps = inputs(model)
    policy = model(rtg, obs, actions, timesteps).policy
    logp = torch.log_softmax(policy.logits, -1)
    torch.testing.assert_close(
        policy.log_prob(actions), logp.gather(-1, actions[..., None])[..., 0]
    )
    torch.testing.assert_close(policy.entropy(), -(logp.exp() * logp).sum(-1))
    assert policy[:, -1].mode().shape == (3,)
    assert policy.log_prob(actions).shape == actions.shape
    assert math.isclose(policy.probs().sum(-1).mean().item(), 1.0, rel_tol=1e-6)


def test_encoder_follows_the_observation_shape():
    assert isinstance(make_model(obs_shape=(5,)).embed_obs, torch.nn.Linear)
    grid = make_model(obs_shape=(3, 4, 5)).embed_obs
    assert any(isinstance(m, torch.nn.Conv2d) for m in grid.modules())
    # Atari's 4 stacked 84x84 frames: the Nature-DQN stack, 7x7x64 features into the token
    frames = make_model(obs_shape=(4, 84, 84)).embed_obs
    assert isinstance(frames, NatureCNN) and frames.proj.in_features == 7 * 7 * 64
    assert frames(torch.full((2, 4, 84, 84), 255, dtype=torch.uint8)).shape == (2, 32)
    with pytest.raises(ValueError, match="obs_shape"):
        make_model(obs_shape=(2, 3))


def test_same_seed_same_weights_and_outputs():
    a, b = make_model(), make_model()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    torch.testing.assert_close(
        a(*inputs(a)).return_logits, b(*inputs(b)).return_logits, atol=0, rtol=0
    )


def test_config_validation_and_round_trip():
    cfg = make_model(discrete=False).config
    assert DTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DTConfig fields"):
        DTConfig.from_dict({**cfg.to_dict(), "n_layers": 3})
    with pytest.raises(ValueError, match="uniform"):
        DTConfig(obs_shape=(1,), act_dim=2, discrete=True, return_bin_edges=(0.0, 1.0, 3.0))
    with pytest.raises(ValueError, match="action_low"):
        DTConfig(obs_shape=(1,), act_dim=2, discrete=False, return_bin_edges=(0.0, 1.0))


def test_dropout_keeps_each_element_with_probability_one_minus_p():
    """The cheap CPU mask is inverted dropout: each element kept with probability 1 - p
    (within 4 standard errors), scaled by 1 / (1 - p), fixed by the torch seed, and the
    identity in evaluation or at p = 0."""
    from ogm.models.decision_transformer import dropout

    x = torch.ones(1000, 999)  # an odd size: the last 64-bit draw is only partly used
    for p in (0.1, 0.5):
        torch.manual_seed(0)
        y = dropout(x, p, training=True)
        kept = (y != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 4 * math.sqrt(p * (1 - p) / x.numel())
        assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / (1 - p))))
        torch.manual_seed(0)
        assert torch.equal(dropout(x, p, training=True), y)
    rows = (dropout(x, 0.1, training=True) != 0).float().mean(dim=1)  # no pattern across rows
    assert rows.std().item() < 2 * math.sqrt(0.09 / 999)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("discrete", [True, False])
def test_acting_forward_equals_the_full_forward(discrete):
    """Tokens embedded step by step and only the last step computed give the full forward
    pass's last step (what :class:`ogm.agents.DTActor` relies on)."""
    model = make_model(discrete, use_timesteps=True)
    rtg, obs, actions, timesteps = inputs(model, K=6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False
    full = model(rtg, obs, actions, timesteps, mask)
    tokens = torch.cat(
        [
            model.embed(
                rtg[:, t : t + 1], obs[:, t : t + 1], actions[:, t : t + 1], timesteps[:, t : t + 1]
            )
            for t in range(6)
        ],
        dim=1,
    )
    last = model.forward_tokens(tokens, mask, last_step_only=True)
    torch.testing.assert_close(last.return_logits[:, 0], full.return_logits[:, -1])
    head = (lambda p: p.logits) if discrete else (lambda p: p.mean)
    torch.testing.assert_close(head(last.policy)[:, 0], head(full.policy)[:, -1])


def test_bfloat16_is_close_to_float32_and_trains():
    """bfloat16 autocast changes the outputs by bfloat16 rounding only, keeps the heads and
    the loss in float32, and gives finite gradients for every parameter."""
    model = make_model(obs_shape=(3, 4, 5))
    rtg, obs, actions, timesteps = inputs(model)
    exact = model(rtg, obs, actions, timesteps)
    model.set_precision("bf16")
    out = model(rtg, obs, actions, timesteps)
    assert out.policy.logits.dtype == out.return_logits.dtype == torch.float32
    torch.testing.assert_close(out.policy.logits, exact.policy.logits, atol=0.03, rtol=0.05)
    torch.testing.assert_close(out.return_logits, exact.return_logits, atol=0.03, rtol=0.05)
    out.policy.log_prob(actions).sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_precision("fp16")


def test_auto_precision_is_bfloat16_only_where_native(monkeypatch):
    from ogm.train import config as config_module
    from ogm.train.config import CommonConfig

    assert CommonConfig(precision="fp32").torch_precision() == "fp32"
    assert CommonConfig(precision="bf16").torch_precision() == "bf16"
    monkeypatch.setattr(config_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert CommonConfig(device="cpu").torch_precision() == "fp32"  # emulated: slower
    monkeypatch.setattr(config_module, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert CommonConfig(device="cpu").torch_precision() == "bf16"
