"""Baselines: SB3 adapter and logging, (filtered) BC, KL-regularised PPO.

Budgets are tiny; the long seeded reference runs live in scripts/reference_baselines.py.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.buffers import ReplayBuffer

from ogm.agents.actor import kl_divergence
from ogm.baselines.bc import BCConfig, filter_top
from ogm.baselines.bc import run as run_bc
from ogm.baselines.best_of_n import BestOfNConfig, best_of_n
from ogm.baselines.best_of_n import run as run_best_of_n
from ogm.baselines.common import (
    EpisodeCollector,
    MLPPolicy,
    event_names_of,
    load_mlp_policy,
    make_env,
)
from ogm.baselines.kl_ppo import (
    KLPPO,
    KLPPOConfig,
    gae,
    kl_shaped_rewards,
    make_agent,
    ppo_policy_loss,
)
from ogm.baselines.kl_ppo import run as run_kl_ppo
from ogm.baselines.sb3 import (
    SB3Config,
    SB3VecEnv,
    _load_replay,
    _replay_arrays,
    build_model,
    load_model,
    save_model,
)
from ogm.baselines.sb3 import run as run_sb3
from ogm.data.dataset import write_dataset
from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.models.decision_transformer import CategoricalPolicy
from ogm.train.evaluation import StatelessAgent, first_episodes
from ogm.train.rundir import RunDir, RunDirError, episode_columns

SOKOBAN = "ogm/SideEffectsSokoban-v0"
TOMATO = "ogm/TomatoWatering-v0"
MOVES = {"u": 0, "d": 1, "l": 2, "r": 3}


def scripted(env_id: str, paths: list[str], **env_kwargs) -> list[Trajectory]:
    """One episode per path (letters u/d/l/r), collected through the baselines' evaluator."""
    config = SB3Config(env_id=env_id, env_kwargs=env_kwargs, num_envs=len(paths))
    step = [0]

    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        t = step[0]
        step[0] += 1
        return np.array([MOVES[p[t]] if t < len(p) else 0 for p in paths])

    results = first_episodes(StatelessAgent(act), config, range(len(paths)), deterministic=True)
    return [r.trajectory for r in results]


@pytest.fixture(scope="module")
def sokoban_demos(tmp_path_factory) -> Path:
    """10 demonstrations on Sokoban level 0: 3 take the short path (45), 7 the safe one (43)."""
    paths = ["ldrdrdr", "drdrd", "ldrdrdr", "ldrdrdr", "drdrd"]
    paths += ["ldrdrdr", "ldrdrdr", "drdrd", "ldrdrdr", "ldrdrdr"]
    trajectories = scripted(SOKOBAN, paths)
    for traj in trajectories:
        traj.source = "demo"
    out = tmp_path_factory.mktemp("data") / "sokoban"
    return write_dataset(trajectories, out, env_id=SOKOBAN)


def roll_back(run_dir: Path) -> int:
    """Make a finished run look as if it was killed after its next-to-last checkpoint;
    returns the episodes.csv rows that checkpoint had seen."""
    checkpoints = run_dir / "checkpoints"
    *_, before, last = sorted(checkpoints.glob("step_*"))
    shutil.rmtree(last)
    (checkpoints / "LATEST").write_text(before.name + "\n")
    return json.loads((before / "state.json").read_text())["state"]["_log_rows"]["episodes"]


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "episodes.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- episodes


def test_collector_gives_reference_episodes_of_sokoban():
    """The reference values of level 0: 'drdrd' 45 / 35 (box cornered), 'ldrdrdr' 43 / 43."""
    short, safe = scripted(SOKOBAN, ["drdrd", "ldrdrdr"])
    assert (short.ret, short.performance, short.length) == (45, 35, 5)
    assert (safe.ret, safe.performance, safe.length) == (43, 43, 7)
    assert short.events["box_irreversible"].sum() >= 1
    assert safe.events["box_irreversible"].sum() == 0
    assert short.terminations[-1] and not short.terminations[:-1].any()
    # the final observation is the one of the last step, not the autoreset one
    assert not np.array_equal(short.observations[-1], short.observations[0])


def test_sb3_adapter_reports_the_same_episodes_as_the_env():
    """The SB3 VecEnv passes the terminal observation and time-limit flag SB3 needs."""
    config = SB3Config(env_id=SOKOBAN, env_kwargs={"max_steps": 6})
    venv = SB3VecEnv(make_env(config, 2, seed=0))
    venv.seed(0)
    venv.reset()
    infos = None
    for t, (a, b) in enumerate(zip("drdrd" + "u", "llllll", strict=True)):
        venv.step_async(np.array([MOVES[a], MOVES[b]]))
        _, _, dones, infos = venv.step_wait()
        if t == 4:
            assert dones.tolist() == [True, False]
            assert infos[0]["TimeLimit.truncated"] is False
            assert "terminal_observation" in infos[0]
    assert dones.tolist() == [False, True]  # copy 1 hits the 6-step limit
    assert infos[1]["TimeLimit.truncated"] is True
    first, second = venv.finished
    assert (first.ret, first.performance) == (45, 35)
    assert (second.ret, second.length, second.truncations[-1]) == (-6, 6, True)


# ----------------------------------------------------------------------------- the KL penalty


def test_kl_penalty_checked_by_hand():
    pi = CategoricalPolicy(torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])))
    pi0 = CategoricalPolicy(torch.log(torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.6, 0.2]])))
    actions = torch.tensor([0, 1])
    rewards = torch.tensor([1.0, 0.0])
    shaped = kl_shaped_rewards(rewards, pi.log_prob(actions), pi0.log_prob(actions), beta=0.5)
    # r - beta * log(pi / pi0): 1 - 0.5 log(0.5 / 0.25) and 0 - 0.5 log(0.3 / 0.6)
    expected = torch.tensor([1 - 0.5 * math.log(2), 0.5 * math.log(2)])
    torch.testing.assert_close(shaped, expected)
    exact = kl_divergence(pi, pi0)
    torch.testing.assert_close(exact[0], torch.tensor(0.5 * math.log(2) - 0.25 * math.log(2)))


def test_ppo_clipped_loss_checked_by_hand():
    logp_old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))
    adv = torch.tensor([1.0, 1.0, -2.0, -1.0])
    # min(r A, clip(r) A): 1.2, 0.5, -2.2, -0.8
    expected = -(1.2 + 0.5 - 2.2 - 0.8) / 4
    assert ppo_policy_loss(logp, logp_old, adv, clip_coef=0.2).item() == pytest.approx(expected)


def test_gae_with_unit_discount_is_return_to_episode_end_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    values = torch.tensor([[0.5], [0.0], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0], [0.0]])  # the first episode ends at step 1
    adv, ret = gae(rewards, values, dones, torch.tensor([10.0]), gamma=1.0, gae_lambda=1.0)
    torch.testing.assert_close(ret[:, 0], torch.tensor([3.0, 2.0, 17.0, 14.0]))
    torch.testing.assert_close(adv, ret - values)


def _trainer(beta: float, seed: int = 0, **overrides) -> KLPPO:
    config = KLPPOConfig(
        env_id=TOMATO,
        policy="mlp",
        beta=beta,
        seed=seed,
        num_envs=8,
        n_steps=32,
        batch_size=128,
        **overrides,
    )
    env = make_env(config, config.num_envs, seed=seed)
    torch.manual_seed(seed)
    prior = MLPPolicy(env.single_observation_space.shape, env.single_action_space)
    return KLPPO(config, prior, env)


def _train(trainer: KLPPO, rollouts: int) -> dict:
    env = trainer.env
    obs, _ = env.reset(seed=trainer.config.seed)
    collector = EpisodeCollector(env.num_envs, event_names_of(env))
    collector.start(obs)
    trainer.agent.reset(env.num_envs)
    rollout = None
    for _ in range(rollouts):
        rollout, obs, _, _ = trainer.collect(obs, collector)
        trainer.update(rollout)
    return rollout


def test_rollout_penalty_is_per_step_against_the_frozen_prior():
    trainer = _trainer(beta=0.3)
    _train(trainer, 2)  # the policy has moved away from the prior
    obs, _ = trainer.env.reset(seed=5)
    collector = EpisodeCollector(trainer.env.num_envs, event_names_of(trainer.env))
    collector.start(obs)
    rollout, *_ = trainer.collect(obs, collector)
    with torch.no_grad():
        states, actions = rollout["obs"], rollout["actions"]
        logp = trainer.policy.distribution(states.flatten(0, 1)).log_prob(actions.flatten())
        logp0 = trainer.prior.distribution(states.flatten(0, 1)).log_prob(actions.flatten())
    torch.testing.assert_close(rollout["logp"].flatten(), logp)
    torch.testing.assert_close(rollout["logp_prior"].flatten(), logp0)
    assert (logp - logp0).abs().max() > 1e-3  # the penalty is not trivially zero
    shaped = kl_shaped_rewards(rollout["rewards"], rollout["logp"], rollout["logp_prior"], 0.3)
    torch.testing.assert_close(
        shaped.flatten(), rollout["rewards"].flatten() - 0.3 * (logp - logp0)
    )
    assert all(p.requires_grad is False for p in trainer.prior.parameters())


def _dt_trainer(precision: str) -> KLPPO:
    """KL-PPO of a small random DT on tomato watering (contexts of 4: windows roll over)."""
    config = KLPPOConfig(
        env_id=TOMATO, beta=0.3, num_envs=4, n_steps=24, batch_size=32, precision=precision
    )
    env = make_env(config, config.num_envs, seed=0)
    torch.manual_seed(0)
    model_config = DTConfig(
        obs_shape=env.single_observation_space.shape,
        act_dim=int(env.single_action_space.n),
        discrete=True,
        return_bin_edges=return_bin_edges_for(0.0, 20.0, 8),
        context_len=4,
        n_layer=1,
        n_head=1,
        n_embd=32,
        dropout=0.0,
    )
    return KLPPO(config, DecisionTransformer(model_config), env)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dt_acts_with_cached_tokens_that_match_the_full_window(precision):
    """The DT policy and prior act from tokens the actor keeps (one new step encoded per
    model and step); their log probabilities are those of the full window the update reads
    again, also after updates changed the policy (refresh) and after a checkpoint restore."""
    trainer = _dt_trainer(precision)
    _train(trainer, 2)  # the policy has moved from the prior
    tolerance = {"atol": 1e-5, "rtol": 0} if precision == "fp32" else {"atol": 0.05, "rtol": 0}

    def check(rollout) -> None:
        inputs = {k: v.flatten(0, 1) for k, v in rollout["inputs"].items()}
        actions = rollout["actions"].flatten()
        with torch.no_grad():
            for module, key in ((trainer.policy, "logp"), (trainer.prior, "logp_prior")):
                full = trainer.agent.distribution(module, inputs).log_prob(actions)
                torch.testing.assert_close(rollout[key].flatten(), full, **tolerance)
        assert (rollout["logp"] - rollout["logp_prior"]).abs().max() > 1e-3

    obs, _ = trainer.env.reset(seed=5)
    collector = EpisodeCollector(trainer.env.num_envs, event_names_of(trainer.env))
    collector.start(obs)
    rollout, obs, *_ = trainer.collect(obs, collector)
    check(rollout)
    trainer.update(rollout)  # refreshes the policy's tokens of the episodes under way
    saved = trainer.agent.state_arrays()
    restored = trainer.make_agent()
    restored.reset(trainer.env.num_envs)
    restored.load_state_arrays(saved)
    trainer.agent = restored  # what a resumed run acts with: tokens encoded again
    rollout, *_ = trainer.collect(obs, collector)
    check(rollout)


def test_beta_zero_is_plain_ppo_the_prior_is_never_used():
    """With beta = 0, swapping the prior for another network changes nothing at all."""

    def final_params(beta: float, swap_prior: bool) -> torch.Tensor:
        trainer = _trainer(beta)
        if swap_prior:
            torch.manual_seed(123)
            other = MLPPolicy(trainer.prior.net.obs_shape, trainer.prior.action_space)
            trainer.prior = trainer.agent.prior = other.requires_grad_(False)
        _train(trainer, 2)
        return torch.cat([p.detach().flatten() for p in trainer.policy.parameters()])

    torch.testing.assert_close(final_params(0.0, False), final_params(0.0, True), rtol=0, atol=0)
    # the check can fail: with beta > 0 the prior does change the updates
    assert not torch.equal(final_params(0.5, False), final_params(0.5, True))


def _mean_kl_to_prior(trainer: KLPPO) -> float:
    obs, _ = trainer.env.reset(seed=99)
    collector = EpisodeCollector(trainer.env.num_envs, event_names_of(trainer.env))
    collector.start(obs)
    rollout, *_ = trainer.collect(obs, collector)
    with torch.no_grad():
        states = rollout["obs"].flatten(0, 1)
        kl = kl_divergence(trainer.policy.distribution(states), trainer.prior.distribution(states))
    return float(kl.mean())


def test_large_beta_keeps_the_policy_near_the_prior():
    free = _trainer(beta=0.0, learning_rate=3e-3)
    _train(free, 12)
    held = _trainer(beta=20.0, learning_rate=3e-3)
    _train(held, 12)
    kl_free, kl_held = _mean_kl_to_prior(free), _mean_kl_to_prior(held)
    assert kl_free > 0.1  # without the penalty PPO moves far from the prior
    assert kl_held < 0.02
    assert kl_held < kl_free / 10


# ----------------------------------------------------------------------------- filtered BC


def _traj(ret: float) -> Trajectory:
    return Trajectory(
        observations=np.zeros((2, 1), np.float32),
        actions=np.zeros(1, np.int64),
        rewards=np.array([ret], np.float32),
        terminations=np.array([True]),
        truncations=np.array([False]),
    )


def test_filter_top_reference_cases():
    trajs = [_traj(r) for r in (5, 1, 9, 5, 7, 5, 3, 0, 2, 8)]
    rets = lambda kept: [t.ret for t in kept]  # noqa: E731
    assert rets(filter_top(trajs, 0.1)) == [9]
    assert rets(filter_top(trajs, 0.3)) == [9, 7, 8]  # 0.3 * 10 is 3, not ceil(3.0000000004)
    assert rets(filter_top(trajs, 0.25)) == [9, 7, 8]  # ceil(2.5) = 3
    assert rets(filter_top(trajs, 0.4)) == [5, 9, 7, 8]  # tie at 5: the earliest is kept
    assert [id(t) for t in filter_top(trajs, 0.5)] == [id(trajs[i]) for i in (0, 2, 3, 4, 9)]
    assert filter_top(trajs, 1.0) == trajs
    assert len(filter_top(trajs, 0.01)) == 1
    with pytest.raises(ValueError, match="top_fraction"):
        filter_top(trajs, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=40),
    st.floats(0.01, 1.0, allow_nan=False),
)
def test_filter_top_keeps_exactly_the_top_fraction(returns, fraction):
    trajs = [_traj(r) for r in returns]
    kept = filter_top(trajs, fraction)
    n = len(trajs)
    assert len(kept) == max(1, math.ceil(round(fraction * n, 9)))
    kept_ids = {id(t) for t in kept}
    dropped = [t.ret for t in trajs if id(t) not in kept_ids]
    assert not dropped or min(t.ret for t in kept) >= max(dropped)
    # ties at the cut: every kept trajectory with the cut's return precedes every dropped one
    cut = min(t.ret for t in kept)
    kept_at_cut = [i for i, t in enumerate(trajs) if id(t) in kept_ids and t.ret == cut]
    dropped_at_cut = [i for i, t in enumerate(trajs) if id(t) not in kept_ids and t.ret == cut]
    assert not dropped_at_cut or max(kept_at_cut) < min(dropped_at_cut)


def test_filtered_bc_clones_only_the_top_demonstrations(sokoban_demos, tmp_path):
    """Top 30% of the data is the 3 short-path episodes: filtered BC walks it (45 / 35);
    plain BC follows the majority's safe path (43 / 43)."""
    common = dict(
        env_id=SOKOBAN,
        dataset=str(sokoban_demos),
        updates=300,
        eval_every_updates=300,
        eval_episodes=2,
    )
    results = {}
    for fraction in (0.3, 1.0):
        out = tmp_path / f"bc{fraction}"
        run_bc(BCConfig(top_fraction=fraction, **common), out)
        record = RunDir.open(out).record
        assert record["kept"] == {0.3: 3, 1.0: 10}[fraction]
        results[fraction] = {(float(r["return"]), float(r["performance"])) for r in read_rows(out)}
    assert results[0.3] == {(45.0, 35.0)}
    assert results[1.0] == {(43.0, 43.0)}


def test_bc_resume_gives_the_same_numbers(sokoban_demos, tmp_path):
    config = BCConfig(
        env_id=SOKOBAN,
        dataset=str(sokoban_demos),
        updates=40,
        eval_every_updates=20,
        eval_episodes=2,
    )
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_bc(config, whole)
    run_bc(config, resumed)
    roll_back(resumed)
    run_bc(config, resumed)
    assert (whole / "episodes.csv").read_text() == (resumed / "episodes.csv").read_text()
    a, b = load_mlp_policy(whole), load_mlp_policy(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


# ----------------------------------------------------------------------------- SB3


def test_sb3_checkpoint_round_trip_keeps_replay_and_optimiser(tmp_path):
    config = SB3Config(
        env_id=SOKOBAN,
        algo="dqn",
        num_envs=4,
        hyperparams={"learning_starts": 100, "buffer_size": 5_000},
    )
    venv = SB3VecEnv(make_env(config, config.num_envs, seed=0))
    model = build_model(config, venv)
    model.learn(600)
    run = RunDir.create(tmp_path / "run", kind="sb3", config=config, seed=0)
    save_model(run, model, {"round": 1})
    fresh = build_model(config, SB3VecEnv(make_env(config, config.num_envs, seed=0)))
    load_model(fresh, run.resume())
    assert fresh.num_timesteps == model.num_timesteps >= 600
    assert fresh.replay_buffer.pos == model.replay_buffer.pos
    size = model.replay_buffer.pos
    for key in ("observations", "next_observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(
            getattr(fresh.replay_buffer, key)[:size], getattr(model.replay_buffer, key)[:size]
        )
    for (name, x), y in zip(
        model.policy.state_dict().items(), fresh.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    saved, loaded = model.policy.optimizer.state_dict(), fresh.policy.optimizer.state_dict()
    for k, v in saved["state"].items():
        assert torch.equal(v["exp_avg"], loaded["state"][k]["exp_avg"])
    assert fresh._n_calls == model._n_calls > 0  # target-network update clock


def _frame_stack_buffer(size: int, rows: int, envs: int = 2) -> ReplayBuffer:
    """A replay buffer filled the way Atari's is: stacks of the last 4 frames, episodes that
    end at random (a new stack starts), and more rows than it holds (the ring wraps)."""
    rng = np.random.default_rng(0)
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = ReplayBuffer(size, space, gym.spaces.Discrete(3), n_envs=envs)
    obs = rng.integers(0, 256, (envs, 4, 84, 84), dtype=np.uint8)
    for _ in range(rows):
        frame = rng.integers(0, 256, (envs, 1, 84, 84), dtype=np.uint8)
        next_obs = np.concatenate([obs[:, 1:], frame], axis=1)
        done = rng.random(envs) < 0.05
        buffer.add(obs, next_obs, rng.integers(0, 3, envs), rng.random(envs), done, [{}] * envs)
        obs = np.where(
            done[:, None, None, None], rng.integers(0, 256, obs.shape, np.uint8), next_obs
        )
    return buffer


@pytest.mark.parametrize("rows", [100, 400])  # part filled; wrapped around (150 rows of 2 envs)
def test_replay_checkpoints_keep_each_frame_once_and_restore_exactly(rows):
    buffer = _frame_stack_buffer(300, rows)
    arrays = _replay_arrays(buffer)
    frames = ("obs_whole", "obs_newest", "next_whole")
    stored = sum(arrays[f"replay/{key}"].nbytes for key in frames)
    filled = buffer.buffer_size if buffer.full else buffer.pos
    as_kept = 2 * buffer.observations[:filled].nbytes
    # 1 frame of 8 per row, and 8 where an episode ended (5% of the rows)
    assert stored < 0.25 * as_kept
    fresh = ReplayBuffer(300, buffer.observation_space, buffer.action_space, n_envs=2)
    _load_replay(fresh, arrays)
    assert (fresh.pos, fresh.full) == (buffer.pos, buffer.full)
    for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fresh, key), getattr(buffer, key), err_msg=key)


# ----------------------------------------------------------------------------- common metrics


def _check_rows(rows, columns, event_names):
    """Rows are complete, numbered per phase and mode, and their event shares match their
    counts; every evaluation point holds as many greedy as sampled episodes."""
    assert list(rows[0]) == columns
    for key in {(r["phase"], r["mode"]) for r in rows}:
        numbers = [int(r["episode"]) for r in rows if (r["phase"], r["mode"]) == key]
        assert numbers == list(range(len(numbers)))
    for point in {r["round"] for r in rows if r["phase"] == "eval"}:
        modes = [r["mode"] for r in rows if r["phase"] == "eval" and r["round"] == point]
        assert modes.count("greedy") == modes.count("sampled") > 0
    for r in rows:
        assert r["phase"] in ("train", "eval")
        assert r["mode"] == "sampled" or r["phase"] == "eval"
        length = int(r["length"])
        assert length >= 1
        for name in event_names:
            assert float(r[f"ev_{name}_share"]) == pytest.approx(int(r[f"ev_{name}"]) / length)
    train = [int(r["env_steps"]) for r in rows if r["phase"] == "train"]
    assert train == sorted(train)


def _check_sokoban_row(r):
    """Level 0 dynamics: -1 a move, +50 at the goal; hidden adds multiples of -5 per box."""
    ret, perf, length = float(r["return"]), float(r["performance"]), int(r["length"])
    assert ret == (50 - length if length < 100 else -100)
    assert (ret - perf) % 5 == 0 and ret - perf >= 0


def _check_tomato_row(r):
    """Observed and hidden rewards differ only on steps spent on the transformer."""
    ret, perf = float(r["return"]), float(r["performance"])
    assert int(r["length"]) == 100
    if int(r["ev_on_transformer"]) == 0:
        assert ret == pytest.approx(perf, abs=1e-5)
    else:
        assert ret > perf


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_sb3_writes_the_common_metrics(algo, tmp_path):
    config = SB3Config(
        env_id=TOMATO,
        algo=algo,
        num_envs=4,
        total_timesteps=1_024,
        eval_every=512,
        eval_episodes=3,
        hyperparams={"n_steps": 64, "batch_size": 128}
        if algo == "ppo"
        else {"learning_starts": 200},
    )
    run_sb3(config, tmp_path)
    rows = read_rows(tmp_path)
    _check_rows(rows, episode_columns(["on_transformer"]), ["on_transformer"])
    for r in rows:
        _check_tomato_row(r)
    record = RunDir.open(tmp_path).record
    steps = record["env_steps"]
    online = [r for r in rows if r["phase"] == "train"]
    # every tomato episode lasts 100 steps, so exactly this many finished in every copy
    assert len(online) == 4 * (steps // 4 // 100)
    rounds = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert len(rounds) == 2
    assert sum(r["phase"] == "eval" for r in rows) == 2 * 3 * len(rounds)
    assert sum(int(r["episodes"]) for r in rounds) == len(online)
    assert record["status"] == "done"


def test_sb3_sac_on_a_continuous_env(tmp_path):
    config = SB3Config(
        env_id="Pendulum-v1",
        algo="sac",
        num_envs=2,
        total_timesteps=500,
        eval_every=500,
        eval_episodes=1,
        hyperparams={"learning_starts": 100, "buffer_size": 1_000},
    )
    run_sb3(config, tmp_path)
    rows = read_rows(tmp_path)
    _check_rows(rows, episode_columns([]), [])
    assert {int(r["length"]) for r in rows} == {200}
    # hidden reward is the reward where an env defines none
    assert all(r["return"] == r["performance"] for r in rows)
    with pytest.raises(ValueError, match="continuous"):
        build_model(SB3Config(env_id="Pendulum-v1", algo="dqn"), SB3VecEnv(make_env(config, 1, 0)))


@pytest.mark.parametrize("policy", ["mlp", "dt"])
def test_kl_ppo_writes_the_common_metrics(policy, sokoban_demos, tmp_path):
    pretrain = {"updates": 30, "eval_episodes": 1}
    if policy == "dt":
        pretrain |= {"n_layer": 1, "n_embd": 32, "context_len": 4, "n_bins": 16}
    config = KLPPOConfig(
        env_id=SOKOBAN,
        dataset=str(sokoban_demos),
        policy=policy,
        pretrain=pretrain,
        beta=0.1,
        num_envs=4,
        n_steps=32,
        batch_size=64,
        total_timesteps=256,
        eval_every=128,
        eval_episodes=2,
    )
    run_kl_ppo(config, tmp_path)
    rows = read_rows(tmp_path)
    _check_rows(rows, episode_columns(["box_irreversible"]), ["box_irreversible"])
    for r in rows:
        _check_sokoban_row(r)
    rounds = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert [int(r["env_steps"]) for r in rounds] == [128, 256]
    online = [r for r in rows if r["phase"] == "train"]
    assert sum(int(r["episodes"]) for r in rounds) == len(online)
    assert sum(r["phase"] == "eval" for r in rows) == 2 * 2 * 2
    targets = {r["target_return"] for r in online}
    assert (targets == {"nan"}) == (policy == "mlp")  # the DT records what it was asked for
    assert RunDir.open(tmp_path / "prior").status == "done"
    # a finished run resumed does nothing more
    run_kl_ppo(config, tmp_path)
    assert read_rows(tmp_path) == rows


def test_kl_ppo_rejects_a_prior_of_the_wrong_type(sokoban_demos, tmp_path):
    run_bc(
        BCConfig(env_id=SOKOBAN, dataset=str(sokoban_demos), updates=1, eval_episodes=0),
        tmp_path / "bc",
    )
    config = KLPPOConfig(env_id=SOKOBAN, policy="dt", init=str(tmp_path / "bc"))
    with pytest.raises(RunDirError, match="holds no Decision Transformer"):
        run_kl_ppo(config, tmp_path / "kl")


@pytest.mark.parametrize("kind", ["sb3", "kl_ppo"])
def test_killed_runs_resume_from_their_last_checkpoint(kind, sokoban_demos, tmp_path):
    """Logs are cut back to the checkpoint and the run finishes with the same budget.

    (tests/test_resume_all.py checks that the resumed rows are the same, byte for byte.)"""
    common = dict(env_id=SOKOBAN, num_envs=4, eval_episodes=2, eval_every=256)
    if kind == "sb3":
        config = SB3Config(
            total_timesteps=512, hyperparams={"n_steps": 64, "batch_size": 128}, **common
        )
        train = run_sb3
    else:
        config = KLPPOConfig(
            dataset=str(sokoban_demos),
            policy="mlp",
            pretrain={"updates": 20, "eval_episodes": 0},
            total_timesteps=512,
            n_steps=64,
            batch_size=128,
            **common,
        )
        train = run_kl_ppo
    out = tmp_path / "run"
    train(config, out)
    whole = read_rows(out)
    seen = roll_back(out)
    train(config, out)
    again = read_rows(out)
    assert 0 < seen < len(whole)
    assert again[:seen] == whole[:seen]
    _check_rows(again, episode_columns(["box_irreversible"]), ["box_irreversible"])
    assert [r["round"] for r in again if r["phase"] == "eval"] == [
        r["round"] for r in whole if r["phase"] == "eval"
    ]
    record = RunDir.open(out).record
    assert record["status"] == "done" and record["env_steps"] == 512


def test_cli_reports_bad_config_fields(tmp_path):
    from typer.testing import CliRunner

    from ogm.cli.main import app

    result = CliRunner().invoke(
        app, ["baseline", "kl-ppo", "--out", str(tmp_path), "--set", "beta=-1", "--set", "policy=x"]
    )
    assert result.exit_code == 2
    assert "beta" in result.output and "policy" in result.output
    with pytest.raises(ValueError, match="hyperparams for ppo"):
        config = SB3Config(env_id=SOKOBAN, hyperparams={"n_stepz": 3})
        build_model(config, SB3VecEnv(make_env(config, 1, seed=0)))


@pytest.mark.parametrize("kind", ["sb3", "kl_ppo"])
def test_same_seed_gives_the_same_numbers(kind, sokoban_demos, tmp_path):
    common = dict(env_id=SOKOBAN, num_envs=4, eval_episodes=2, eval_every=256, seed=3)
    if kind == "sb3":
        config = SB3Config(
            algo="dqn", total_timesteps=512, hyperparams={"learning_starts": 100}, **common
        )
        train = run_sb3
    else:
        config = KLPPOConfig(
            dataset=str(sokoban_demos),
            policy="dt",
            pretrain={
                "updates": 10,
                "eval_episodes": 0,
                "n_layer": 1,
                "n_embd": 32,
                "context_len": 4,
            },
            total_timesteps=512,
            n_steps=64,
            batch_size=128,
            **common,
        )
        train = run_kl_ppo
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert (tmp_path / "a" / "episodes.csv").read_text() == (
        tmp_path / "b" / "episodes.csv"
    ).read_text()
    assert len(read_rows(tmp_path / "a")) > 4


# ----------------------------------------------------------------------------- best-of-n


def test_best_of_n_keeps_the_best_of_candidates_from_one_start():
    config = BestOfNConfig(env_id=TOMATO, policy="mlp", n=6)
    env = make_env(config, 1, seed=0)
    torch.manual_seed(0)
    prior = MLPPolicy(env.single_observation_space.shape, env.single_action_space)
    agent = make_agent(config, prior, prior, torch.device("cpu"), np.random.default_rng(0))
    gains = []
    for seed in range(4):
        best, candidates = best_of_n(agent, config, seed=seed)
        best, candidates = best.trajectory, [r.trajectory for r in candidates]
        assert len(candidates) == 6
        assert best.ret == max(t.ret for t in candidates)
        assert all(np.array_equal(t.observations[0], best.observations[0]) for t in candidates)
        assert len({t.ret for t in candidates}) > 1  # the candidates are distinct samples
        gains.append(best.ret - np.mean([t.ret for t in candidates]))
    assert min(gains) > 0


def test_best_of_n_run_writes_the_common_metrics(sokoban_demos, tmp_path):
    config = BestOfNConfig(
        env_id=SOKOBAN,
        dataset=str(sokoban_demos),
        policy="mlp",
        pretrain={"updates": 20, "eval_episodes": 0},
        n=4,
        eval_episodes=3,
    )
    run_best_of_n(config, tmp_path)
    rows = read_rows(tmp_path)
    _check_rows(rows, episode_columns(["box_irreversible"]), ["box_irreversible"])
    assert [(r["phase"], r["mode"]) for r in rows] == [("eval", "greedy")] * 3 + [
        ("eval", "sampled")
    ] * 3
    for r in rows:
        _check_sokoban_row(r)
    (summary,) = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert float(summary["eval_return_sampled"]) >= float(summary["candidate_return_mean"])
    assert float(summary["eval_return_sampled"]) == pytest.approx(
        np.mean([float(r["return"]) for r in rows if r["mode"] == "sampled"])
    )
