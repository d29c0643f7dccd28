"""KL-PPO's Decision Transformer prior is conditioned only on returns-to-go it was trained on.

Once the policy beats its target, the return still asked for (target minus rewards so far)
goes below zero, which no demonstration showed the prior; there its actions are arbitrary
and the KL penalty towards it would measure noise. The fed value is clamped into the
prior's return-bin center range.
"""

from __future__ import annotations

import numpy as np
import torch

from ogm.agents.actor import DTActor
from ogm.baselines.kl_ppo import DTAgent
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for

LOW, HIGH = 0.0, 20.0  # the returns-to-go of the prior's training data


def prior_model() -> DecisionTransformer:
    torch.manual_seed(0)
    return DecisionTransformer(
        DTConfig(
            obs_shape=(3,),
            act_dim=4,
            discrete=True,
            return_bin_edges=return_bin_edges_for(LOW, HIGH, 8),
            context_len=4,
            n_layer=1,
            n_head=1,
            n_embd=16,
            dropout=0.0,
        )
    ).eval()


def test_actor_clamps_only_what_it_feeds_and_only_when_asked():
    model = prior_model()
    for clamp, fed in ((True, [LOW, 7.0, HIGH]), (False, [-30.0, 7.0, 45.0])):
        actor = DTActor(model, 3, clamp_returns_to_go=clamp)
        actor.begin_step(np.zeros((3, 3), np.float32))
        actor.set_targets(np.ones(3, bool), np.array([-30.0, 7.0, 45.0]))
        assert actor.returns_to_go[:, actor.pos, 0].tolist() == fed
        actor.record_rewards(np.array([5.0, 9.0, 1.0]))
        actor.begin_step(np.zeros((3, 3), np.float32))
        np.testing.assert_allclose(actor.target, [-35.0, -2.0, 44.0])  # the true remainder
        expected = np.clip(actor.target, LOW, HIGH) if clamp else actor.target
        np.testing.assert_allclose(actor.returns_to_go[:, actor.pos, 0].numpy(), expected)


def test_a_policy_beating_its_target_feeds_the_prior_only_trained_returns_to_go():
    prior, policy = prior_model(), prior_model()
    fed: list[torch.Tensor] = []  # the unpadded returns-to-go of every call of the prior

    def record(module, args, kwargs):
        names = ("returns_to_go", "observations", "actions", "timesteps", "mask")
        inputs = dict(zip(names, args, strict=False))  # the actor passes them by position
        inputs.update(kwargs)
        fed.append(inputs["returns_to_go"][inputs["mask"]])

    hook = prior.register_forward_pre_hook(record, with_kwargs=True)
    agent = DTAgent(policy, prior, torch.device("cpu"), "fixed:6", np.random.default_rng(0))
    agent.reset(2)
    obs = np.zeros((2, 3), np.float32)
    for _ in range(5):  # 4 reward per step: the target of 6 is beaten at the second step
        inputs = agent.inputs(obs)
        pi0 = agent.distribution(prior, inputs)
        agent.observe(np.zeros(2, np.int64), np.full(2, 4.0), np.zeros(2, bool))
    hook.remove()
    np.testing.assert_allclose(agent.actor.target, 6.0 - 5 * 4.0)  # the true remainder
    assert inputs["returns_to_go"][0, :, 0].tolist() == [2.0, LOW, LOW, LOW]  # 6, 2, -2, ...
    fed_values = torch.cat(fed)
    assert float(fed_values.min()) >= LOW and float(fed_values.max()) <= HIGH

    # the true remainder, had it been fed, would change the prior's answer
    raw = {k: v.clone() for k, v in inputs.items()}
    raw["returns_to_go"][:, :, 0] = torch.tensor([2.0, -2.0, -6.0, -10.0])
    unclamped = agent.distribution(prior, raw)
    assert not torch.allclose(unclamped.logits, pi0.logits)
