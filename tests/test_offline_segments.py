"""Segment sampling (ODT / DT style) and the masked DT loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train.segments import SegmentBatch, TrajectoryPool, dt_loss, observation_stats

LENGTHS = (1, 5, 20)


def trajectory(tag: int, length: int, rng: np.random.Generator) -> Trajectory:
    """Observations (tag, step) so a sampled step says where it came from."""
    steps = np.arange(length + 1)
    return Trajectory(
        observations=np.stack((np.full(length + 1, tag), steps), axis=1).astype(np.float32),
        actions=rng.integers(0, 3, length),
        rewards=rng.normal(size=length),
        terminations=np.arange(length) == length - 1,
        truncations=np.zeros(length, bool),
    )


@pytest.fixture
def trajectories() -> list[Trajectory]:
    rng = np.random.default_rng(0)
    return [trajectory(i, n, rng) for i, n in enumerate(LENGTHS)]


def test_segments_are_left_padded_slices_of_one_trajectory(trajectories):
    K = 8
    batch = TrajectoryPool(trajectories).sample(500, K, np.random.default_rng(1))
    assert batch.observations.shape == (500, K, 2) and batch.returns_to_go.shape == (500, K, 1)
    for b in range(500):
        mask = batch.mask[b].numpy()
        n = mask.sum()
        assert n >= 1 and not mask[: K - n].any() and mask[K - n :].all()  # padding first
        tag, first = batch.observations[b, K - n].numpy().astype(int)
        traj = trajectories[tag]
        steps = np.arange(first, first + n)
        assert steps[-1] < traj.length and (n == K or steps[0] == 0)  # short only at starts
        np.testing.assert_array_equal(batch.observations[b, K - n :].numpy(), traj.states[steps])
        np.testing.assert_array_equal(batch.actions[b, K - n :].numpy(), traj.actions[steps])
        np.testing.assert_allclose(
            batch.returns_to_go[b, K - n :, 0].numpy(), traj.returns_to_go()[steps]
        )
        np.testing.assert_array_equal(batch.timesteps[b, K - n :].numpy(), steps)
        assert not batch.observations[b, : K - n].any() and not batch.actions[b, : K - n].any()


def test_trajectory_in_proportion_to_length_and_uniform_last_step(trajectories):
    batch = TrajectoryPool(trajectories).sample(30000, 4, np.random.default_rng(2))
    last = batch.observations[:, -1]  # (tag, step) of each segment's last step
    tags = last[:, 0].long().numpy()
    share = np.bincount(tags, minlength=3) / len(tags)
    np.testing.assert_allclose(share, np.array(LENGTHS) / sum(LENGTHS), atol=0.01)  # ~4 sigma
    ends = last[tags == 2, 1].long().numpy()
    freq = np.bincount(ends, minlength=20) / len(ends)
    assert np.abs(freq - 1 / 20).max() < 0.008  # ~4 sigma at ~23000 draws


def test_sampling_is_reproducible(trajectories):
    pool = TrajectoryPool(trajectories)
    a = pool.sample(64, 5, np.random.default_rng(3))
    b = pool.sample(64, 5, np.random.default_rng(3))
    for name in ("observations", "actions", "returns_to_go", "timesteps", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_cat_keeps_order(trajectories):
    pool = TrajectoryPool(trajectories)
    a, b = pool.sample(3, 5, np.random.default_rng(4)), pool.sample(2, 5, np.random.default_rng(5))
    both = SegmentBatch.cat(a, b)
    assert len(both) == 5
    assert torch.equal(both.actions[3:], b.actions) and torch.equal(both.mask[:3], a.mask)
    with pytest.raises(ValueError, match="K=5 and K=6"):
        SegmentBatch.cat(a, pool.sample(2, 6, np.random.default_rng(5)))


@pytest.mark.parametrize("discrete", [True, False])
def test_every_loss_term_ignores_padding(trajectories, discrete):
    torch.manual_seed(0)
    action = (
        {"act_dim": 3}
        if discrete
        else {"act_dim": 3, "action_low": (-1,) * 3, "action_high": (1,) * 3}
    )
    model = DecisionTransformer(
        DTConfig(
            obs_shape=(2,),
            discrete=discrete,
            return_bin_edges=return_bin_edges_for(-3, 3, 7),
            n_layer=1,
            n_head=1,
            n_embd=16,
            dropout=0.0,
            **action,
        )
    )
    batch = TrajectoryPool(trajectories).sample(16, 6, np.random.default_rng(6))
    if not discrete:
        batch.actions = torch.rand(16, 6, 3) * 2 - 1
    assert not batch.mask.all()
    pad = ~batch.mask
    noisy = SegmentBatch(
        observations=torch.where(pad[..., None], 50.0, batch.observations),
        actions=torch.where(
            pad[..., None] if not discrete else pad, 1 if discrete else 0.9, batch.actions
        ),
        returns_to_go=torch.where(pad[..., None], 99.0, batch.returns_to_go),
        timesteps=batch.timesteps,
        mask=batch.mask,
    )
    for alpha in (0.0, 0.5):
        torch.manual_seed(1)  # the Gaussian's entropy is a one-sample estimate
        loss, stats = dt_loss(model, batch, alpha=alpha)
        torch.manual_seed(1)
        loss2, stats2 = dt_loss(model, noisy, alpha=alpha)
        torch.testing.assert_close(loss, loss2)
        assert stats == pytest.approx(stats2)
    # the value: masked means over the unpadded steps
    out = model(batch.returns_to_go, batch.observations, batch.actions, batch.timesteps, batch.mask)
    m = batch.mask
    nll = -out.policy.log_prob(batch.actions)[m].mean()
    bins = model.return_bin_index(batch.returns_to_go[..., 0])
    ce = torch.nn.functional.cross_entropy(out.return_logits[m], bins[m])
    torch.manual_seed(2)
    loss, stats = dt_loss(model, batch, alpha=0.0, return_coef=0.5)
    torch.testing.assert_close(loss, nll + 0.5 * ce)
    assert stats["nll"] == pytest.approx(nll.item()) and stats["return_ce"] == pytest.approx(
        ce.item()
    )


def test_observation_stats():
    rng = np.random.default_rng(0)
    floats = [trajectory(i, 4, rng) for i in range(3)]
    mean, std = observation_stats(floats)
    states = np.concatenate([t.states for t in floats])
    np.testing.assert_allclose(mean, states.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, states.std(0), rtol=1e-5)
    planes = Trajectory(
        observations=rng.integers(0, 2, (3, 2, 4, 4)).astype(np.uint8),
        actions=np.array([0, 1]),
        rewards=np.zeros(2),
        terminations=np.array([False, True]),
        truncations=np.zeros(2, bool),
    )
    mean, std = observation_stats([planes])
    assert not mean.any() and (std == 1).all() and mean.shape == (2, 4, 4)
