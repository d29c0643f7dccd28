"""episodes.csv's ``kl_to_init``: each evaluation episode's summed KL(pi || pi_init) along the
contexts it visited, exact per step, for the agents that start from an initial policy."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from ogm.agents import ConditionedDT, make_strategy, rollout
from ogm.baselines.best_of_n import BestOfNConfig
from ogm.baselines.best_of_n import run as run_best_of_n
from ogm.baselines.common import MLPPolicy, make_env
from ogm.baselines.kl_ppo import MLPAgent
from ogm.data.dataset import write_dataset
from ogm.data.demonstrators import collect
from ogm.envs import make_vector
from ogm.envs.reward_model import best_of_n_kl
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.online import OnlineConfig
from ogm.train.online import run as run_online

SUMMARIZE = "ogm/Summarize-v0"  # 8 steps an episode: the context window of 3 wraps around
PENDULUM = "Pendulum-v1"
TOMATO = "ogm/TomatoWatering-v0"


def summarize_dt(seed: int) -> DecisionTransformer:
    """A DT for ogm/Summarize-v0, in eval mode, its action head wider than the default init:
    two of them differ clearly (about 0.3 nats a step), and both still sample varied actions."""
    torch.manual_seed(seed)
    model = DecisionTransformer(
        DTConfig(
            obs_shape=(80,),
            act_dim=9,
            discrete=True,
            return_bin_edges=return_bin_edges_for(-1.0, 2.0, 8),
            context_len=3,
            max_ep_len=16,
            n_layer=1,
            n_head=1,
            n_embd=16,
            dropout=0.0,
        )
    )
    torch.nn.init.normal_(model.action_head.weight, std=0.15)
    return model.eval()


def pendulum_dt(seed: int) -> DecisionTransformer:
    """A DT for Pendulum-v1 (tanh-Gaussian actions in [-2, 2]), in eval mode."""
    torch.manual_seed(seed)
    model = DecisionTransformer(
        DTConfig(
            obs_shape=(3,),
            act_dim=1,
            discrete=False,
            action_low=(-2.0,),
            action_high=(2.0,),
            return_bin_edges=return_bin_edges_for(-2000.0, 0.0, 8),
            context_len=3,
            max_ep_len=256,
            n_layer=1,
            n_head=1,
            n_embd=16,
            dropout=0.0,
        )
    )
    return model.eval()


class StepTrace(ConditionedDT):
    """A ConditionedDT that keeps its ``kl_to_init`` after every step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trace: list[np.ndarray] = []

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        actions = super().act(obs, deterministic)
        self.trace.append(self.kl_to_init.copy())
        return actions


def evaluate(agent, env_id: str, episodes: int = 4) -> list:
    """Both modes' evaluation episodes, greedy then sampled."""
    config = CommonConfig(env_id=env_id, num_envs=3, eval_episodes=episodes)
    results = evaluation.evaluate(agent, config)
    return results["greedy"] + results["sampled"]


def test_a_reference_that_is_a_copy_of_the_policy_gives_exactly_zero_at_every_step():
    """Same weights, same tokens, same ops: 0.0 exactly after every step of every copy, and
    for every episode of both modes; NaN when no reference is given."""
    model = summarize_dt(0)
    agent = StepTrace(model, make_strategy("prior"), reference=copy.deepcopy(model))
    results = evaluate(agent, SUMMARIZE)
    assert [r.kl_to_init for r in results] == [0.0] * len(results)
    assert len(agent.trace) >= 8 * 4 and all((kl == 0.0).all() for kl in agent.trace)
    # without a reference nothing is measured
    unmeasured = evaluate(ConditionedDT(model, make_strategy("prior")), SUMMARIZE, episodes=1)
    assert all(math.isnan(r.kl_to_init) for r in unmeasured)


def brute_force_kl(model: DecisionTransformer, reference: DecisionTransformer, result) -> float:
    """The episode's KL(model || reference) summed over its steps from both models' full
    forward pass on each step's window (the last K steps, returns-to-go = target minus the
    rewards so far), in float64 from the heads' outputs."""
    traj, K = result.trajectory, model.config.context_len
    rtg = result.target_return - np.concatenate(([0.0], np.cumsum(traj.rewards)))
    total = 0.0
    for t in range(traj.length):
        w = slice(max(0, t - K + 1), t + 1)
        inputs = (
            torch.tensor(rtg[w], dtype=torch.float32).view(1, -1, 1),
            torch.tensor(traj.states[w])[None],
            torch.tensor(traj.actions[w])[None],
            torch.arange(w.start, w.stop)[None],
        )
        with torch.no_grad():
            p, q = model(*inputs).policy, reference(*inputs).policy
        if model.config.discrete:
            logp = torch.log_softmax(p.logits[0, -1].double(), -1)
            logq = torch.log_softmax(q.logits[0, -1].double(), -1)
            total += float((logp.exp() * (logp - logq)).sum())
        else:  # KL of the Gaussians before the shared tanh squashing
            m1, m2 = p.mean[0, -1].double(), q.mean[0, -1].double()
            s1, s2 = p.log_std[0, -1].double().exp(), q.log_std[0, -1].double().exp()
            total += float(
                (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum()
            )
    return total


@pytest.mark.parametrize(
    ("env_id", "make_model", "episodes", "tolerance"),
    [
        (SUMMARIZE, summarize_dt, 4, 1e-5),
        (PENDULUM, pendulum_dt, 2, 5e-5),  # 200 steps of float32 KLs of about 0.2 each
    ],
)
def test_the_logged_kl_is_the_sum_of_the_exact_per_step_kl(env_id, make_model, episodes, tolerance):
    """Against another DT, each episode's KL equals a re-computation from the full forward
    pass of both models on every window it visited (the actor uses cached tokens and the
    last step only), in both modes."""
    model, reference = make_model(0), make_model(1)
    agent = ConditionedDT(model, make_strategy("prior"), reference=reference)
    results = evaluate(agent, env_id, episodes)
    for r in results:
        expected = brute_force_kl(model, reference, r)
        assert r.kl_to_init == pytest.approx(expected, abs=tolerance)
        assert expected > 0.05 * r.trajectory.length  # a KL far from zero, checked exactly
    # sampling explores: the sampled episodes visit other contexts than the greedy ones
    greedy, sampled = results[:episodes], results[episodes:]
    assert all(
        not np.array_equal(g.trajectory.actions, s.trajectory.actions)
        for g, s in zip(greedy, sampled, strict=True)
    )


def test_each_episode_of_a_rollout_starts_its_sum_afresh():
    """In a rollout copies run episode after episode: every episode's KL is its own."""
    model, reference = summarize_dt(0), summarize_dt(1)
    agent = ConditionedDT(model, make_strategy("prior"), reference=reference)
    env = make_vector(SUMMARIZE, 2, autoreset_mode=AutoresetMode.DISABLED)
    results = rollout(agent, env, 5, seed=0, deterministic=False)
    for r in results:
        assert r.kl_to_init == pytest.approx(brute_force_kl(model, reference, r), abs=1e-5)


def test_kl_ppo_mlp_agents_log_the_kl_from_their_prior():
    """An MLP policy and its prior: the per-episode KL is the sum over the episode's
    observations of the exact KL of the two MLPs' action distributions."""
    config = CommonConfig(env_id=SUMMARIZE, num_envs=3, eval_episodes=3)
    env = make_env(config, 1, seed=None)
    policy, prior = (
        MLPPolicy(env.single_observation_space.shape, env.single_action_space) for _ in range(2)
    )
    env.close()
    for p in (*policy.parameters(), *prior.parameters()):
        torch.nn.init.normal_(p, std=0.5)
    agent = MLPAgent(policy, prior, torch.device("cpu"))
    results = evaluation.evaluate(agent, config)
    for r in results["greedy"] + results["sampled"]:
        with torch.no_grad():
            states = torch.as_tensor(r.trajectory.states)
            logp = torch.log_softmax(policy.net(states).double(), -1)
            logq = torch.log_softmax(prior.net(states).double(), -1)
        expected = float((logp.exp() * (logp - logq)).sum())
        assert r.kl_to_init == pytest.approx(expected, abs=1e-5, rel=1e-6)
        assert expected > 0.1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tomato"
    return write_dataset(collect(TOMATO, 6, epsilon=0.1, seed=0), out, env_id=TOMATO)


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_an_ogm_run_logs_zero_at_round_0_then_its_drift_and_nan_for_training(dataset, tmp_path):
    """The OGM agent starts as its offline policy (KL exactly 0 at round 0, and the GM
    evaluation of that policy logs 0 too), a round of updates moves it away (finite, >= 0,
    not all 0), and training episodes are not measured."""
    config = OnlineConfig(
        env_id=TOMATO,
        dataset=str(dataset),
        num_envs=2,
        eval_episodes=2,
        eval_every=10**6,  # evaluated at round 0 and after the last round
        device="cpu",
        precision="fp32",
        offline={
            "n_layer": 1,
            "n_head": 1,
            "n_embd": 16,
            "context_len": 4,
            "n_bins": 8,
            "updates": 20,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_steps": 5,
            "dropout": 0.3,  # acting is in eval mode: dropout never perturbs an evaluation
            "fidelity_targets": 0,
        },
        online={
            "rounds": 1,
            "episodes_per_round": 2,
            "updates_per_round": 8,
            "learning_rate": 1e-2,
            "batch_size": 8,
            "probe_segments": 8,
        },
    )
    run_online(config, tmp_path)
    episodes = rows(tmp_path / "episodes.csv")
    assert list(episodes[0])[-1] == "kl_to_init"
    gm = rows(tmp_path / "offline" / "episodes.csv")
    assert len(gm) == 4 and all(float(r["kl_to_init"]) == 0.0 for r in gm)
    evals = {
        rnd: [
            float(r["kl_to_init"]) for r in episodes if r["phase"] == "eval" and r["round"] == rnd
        ]
        for rnd in ("0", "1")
    }
    assert evals["0"] == [0.0] * 4
    assert len(evals["1"]) == 4 and all(math.isfinite(kl) and kl >= 0 for kl in evals["1"])
    assert max(evals["1"]) > 0
    train = [r["kl_to_init"] for r in episodes if r["phase"] == "train"]
    assert train == ["nan"] * 2


def test_best_of_n_eval_rows_carry_the_analytic_kl(dataset, tmp_path):
    """Kept (sampled) episodes log best_of_n_kl(n); greedy ones are pi_0's own: 0."""
    n = 3
    config = BestOfNConfig(
        env_id=TOMATO,
        dataset=str(dataset),
        policy="mlp",
        pretrain={"updates": 4, "eval_episodes": 0},
        n=n,
        eval_episodes=2,
    )
    run_best_of_n(config, tmp_path)
    kls = {(r["mode"], float(r["kl_to_init"])) for r in rows(tmp_path / "episodes.csv")}
    assert kls == {("greedy", 0.0), ("sampled", best_of_n_kl(n))}
    assert best_of_n_kl(n) == pytest.approx(math.log(3) - 2 / 3)
