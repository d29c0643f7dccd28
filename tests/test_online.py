"""Online finetuning (ODT): hindsight relabelling, demo share, temperature, KL cap, logs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from ogm.data import Trajectory, collect, write_dataset
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train.config import ConfigError, validate_config
from ogm.train.online import (
    Learner,
    OnlineConfig,
    policy_kl,
    probe_policy,
    run,
    sample_batch,
    train_round,
)
from ogm.train.replay import ReplayBuffer
from ogm.train.rundir import load_checkpoint
from ogm.train.segments import TrajectoryPool

ENV = "ogm/TomatoWatering-v0"
TINY_OFFLINE = {
    "n_layer": 1,
    "n_head": 1,
    "n_embd": 32,
    "context_len": 5,
    "n_bins": 16,
    "updates": 40,
    "batch_size": 16,
    "checkpoint_every": 40,
    "learning_rate": 3e-3,
    "warmup_steps": 5,
}


@pytest.fixture(scope="module")
def demos() -> list[Trajectory]:
    return collect(ENV, 12, epsilon=0.05, seed=0)


@pytest.fixture(scope="module")
def dataset(demos, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "tomato"
    write_dataset(demos, out, env_id=ENV, env_kwargs={}, metadata={})
    return str(out)


def tiny_config(dataset: str, **online) -> OnlineConfig:
    base = {
        "rounds": 2,
        "episodes_per_round": 2,
        "updates_per_round": 6,
        "batch_size": 8,
        "eval_every": 2,
        "checkpoint_every": 1,
        "probe_segments": 16,
        "kl_check_every": 3,
    }
    return OnlineConfig(
        env_id=ENV,
        dataset=dataset,
        num_envs=2,
        eval_episodes=2,
        device="cpu",
        offline=TINY_OFFLINE,
        online={**base, **online},
    )


def tiny_model(demos: list[Trajectory], seed: int = 0) -> DecisionTransformer:
    torch.manual_seed(seed)
    rtg = np.concatenate([t.returns_to_go() for t in demos])
    return DecisionTransformer(
        DTConfig(
            obs_shape=demos[0].states.shape[1:],
            act_dim=4,
            discrete=True,
            return_bin_edges=return_bin_edges_for(rtg.min(), rtg.max(), 8),
            context_len=5,
            n_layer=1,
            n_head=1,
            n_embd=32,
            dropout=0.0,
        )
    )


def tagged(traj: Trajectory, tag: int, source: str) -> Trajectory:
    """A copy whose observations all equal ``tag``, so a segment's origin can be read off."""
    return Trajectory(
        observations=np.full_like(traj.observations, tag),
        actions=traj.actions,
        rewards=traj.rewards,
        terminations=traj.terminations,
        truncations=traj.truncations,
        source=source,
    )


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- demo_fraction


@pytest.mark.parametrize("demo_fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_demo_fraction_is_the_exact_share_of_every_batch(demos, demo_fraction, batch_size):
    demo_pool = TrajectoryPool([tagged(t, 1, "demo") for t in demos])
    # the buffer holds demonstrations too: they must not count towards the demo share
    buffer = ReplayBuffer(30, [tagged(t, 3, "demo") for t in demos])
    buffer.add([tagged(t, 2, "online") for t in demos])
    replay_pool = TrajectoryPool(buffer.trajectories)
    rng = np.random.default_rng(0)
    expected = round(demo_fraction * batch_size)
    for _ in range(20):
        batch = sample_batch(demo_pool, replay_pool, batch_size, demo_fraction, 5, rng)
        assert len(batch) == batch_size
        tags = batch.observations[:, -1].flatten(1).amax(1)  # last step is never padding
        assert int((tags == 1).sum()) == expected
        assert bool((tags[:expected] == 1).all())


# ----------------------------------------------------------------------------- temperature


def entropy_run(model, demos, fraction: float, steps: int) -> tuple[list[float], list[float]]:
    """Entropy and temperature over ``steps`` updates on demo batches."""
    cfg = OnlineConfig(
        dataset="unused",
        online={"target_entropy_fraction": fraction, "temperature_lr": 0.05, "learning_rate": 3e-3},
    )
    learner = Learner(model, cfg)
    pool, rng = TrajectoryPool(demos), np.random.default_rng(0)
    entropies, alphas = [], []
    for _ in range(steps):
        stats = learner.update(pool.sample(16, 5, rng))
        entropies.append(stats["entropy"])
        alphas.append(learner.alpha)
    return entropies, alphas


def test_temperature_falls_when_entropy_is_above_target(demos):
    model = tiny_model(demos)  # untrained: near uniform, entropy ~ log 4
    entropies, alphas = entropy_run(model, demos, fraction=0.1, steps=30)
    target = 0.1 * math.log(4)
    assert entropies[0] > target
    assert all(b < a for a, b in zip([0.1, *alphas], alphas, strict=False))


def test_temperature_drives_entropy_towards_the_target(demos):
    model = tiny_model(demos)
    # Behaviour cloning without entropy bonus first: the policy's entropy drops well below
    # the target, then the learned temperature has to bring it back up.
    learner = Learner(
        model, OnlineConfig(dataset="unused", online={"entropy": False, "learning_rate": 3e-3})
    )
    pool, rng = TrajectoryPool(demos), np.random.default_rng(1)
    for _ in range(300):
        learner.update(pool.sample(16, 5, rng))
    target = 0.99 * math.log(4)
    entropies, alphas = entropy_run(model, demos, fraction=0.99, steps=150)
    assert entropies[0] < target - 0.3
    assert alphas[-1] > 10 * 0.1  # the temperature rose while entropy was below target
    start_gap = target - entropies[0]
    end_gap = abs(target - np.mean(entropies[-20:]))
    assert end_gap < 0.1 * start_gap


def test_entropy_off_means_zero_temperature_and_no_dual_update(demos):
    model = tiny_model(demos)
    learner = Learner(model, OnlineConfig(dataset="unused", online={"entropy": False}))
    log_alpha = learner.log_alpha.item()
    pool, rng = TrajectoryPool(demos), np.random.default_rng(0)
    for _ in range(3):
        learner.update(pool.sample(8, 5, rng))
    assert learner.alpha == 0.0
    assert learner.log_alpha.item() == log_alpha


# ----------------------------------------------------------------------------- KL cap


@pytest.mark.parametrize("max_kl", [0.002, 0.02])
def test_shift_cap_holds_the_measured_kl_under_its_bound(demos, max_kl):
    pool = TrajectoryPool(demos)
    probe = pool.sample(32, 5, np.random.default_rng(7))

    def shifted(cap):
        model = tiny_model(demos)
        cfg = OnlineConfig(dataset="unused", online={"learning_rate": 3e-3})
        learner = Learner(model, cfg)
        before = probe_policy(model, probe)
        rng = np.random.default_rng(0)
        stats, capped = train_round(
            learner, lambda: pool.sample(16, 5, rng), 60, probe, cap, block=5
        )
        return policy_kl(before, probe_policy(model, probe), probe.mask), len(stats), capped

    free_kl, free_updates, free_capped = shifted(None)
    assert (free_updates, free_capped) == (60, False)
    assert free_kl > max_kl  # without the cap the policy moves further than the bound
    kl, updates, capped = shifted(max_kl)
    assert capped and updates < 60 and updates % 5 == 0
    assert kl <= max_kl


def test_policy_kl_matches_closed_forms():
    from ogm.models import CategoricalPolicy, TanhGaussianPolicy

    p = CategoricalPolicy(torch.log(torch.tensor([[[0.5, 0.5]]])))
    q = CategoricalPolicy(torch.log(torch.tensor([[[0.9, 0.1]]])))
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert policy_kl(p, q, mask) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5))
    low, high = torch.tensor([-1.0]), torch.tensor([1.0])
    g1 = TanhGaussianPolicy(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), low, high)
    g2 = TanhGaussianPolicy(torch.ones(1, 1, 1), torch.full((1, 1, 1), math.log(2)), low, high)
    # KL(N(0,1) || N(1,4)) = log 2 + (1 + 1) / 8 - 1/2
    assert policy_kl(g1, g2, mask) == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-5)


# ----------------------------------------------------------------------------- whole run


@pytest.fixture(scope="module")
def fixed_target_run(dataset, tmp_path_factory):
    """A short run asking for an unreachable return (1000) with the KL cap on."""
    run_dir = tmp_path_factory.mktemp("runs") / "odt"
    config = tiny_config(dataset, strategy="fixed:1000", max_kl_per_round=0.05, demo_fraction=0.25)
    run(config, run_dir)
    return config, run_dir


def test_hindsight_relabelling_uses_the_rewards_received(fixed_target_run):
    _, run_dir = fixed_target_run
    rows = [r for r in read_csv(run_dir / "episodes.csv") if r["phase"] == "online"]
    assert len(rows) == 4
    assert all(float(r["target_return"]) == 1000.0 for r in rows)
    buffer = ReplayBuffer.from_arrays(
        {
            k.removeprefix("buffer."): v
            for k, v in load_checkpoint(run_dir).arrays.items()
            if k.startswith("buffer.")
        }
    )
    online = [t for t in buffer.trajectories if t.source == "online"]
    assert [t.ret for t in online] == pytest.approx([float(r["return"]) for r in rows])
    pool = TrajectoryPool(online)
    for traj, start in zip(online, pool.offsets, strict=True):
        rtg = pool.returns_to_go[start : start + traj.length]
        # returns-to-go are suffix sums of the rewards actually received, not the target
        assert rtg[0] == pytest.approx(traj.ret, abs=1e-4) and traj.ret < 1000
        np.testing.assert_allclose(rtg[:-1] - rtg[1:], traj.rewards[:-1], atol=1e-4)
        assert rtg[-1] == pytest.approx(traj.rewards[-1])


def test_run_logs_every_metric_per_episode_and_round(fixed_target_run):
    _, run_dir = fixed_target_run
    episodes = read_csv(run_dir / "episodes.csv")
    assert [r["phase"] for r in episodes] == ["eval"] * 2 + ["online"] * 4 + ["eval"] * 2
    online = [r for r in episodes if r["phase"] == "online"]
    steps = np.cumsum([int(r["length"]) for r in online])
    assert [int(r["env_steps"]) for r in online] == steps.tolist()
    assert [int(r["episode"]) for r in online] == [0, 1, 2, 3]
    for row in episodes:
        count, length = int(row["ev_on_transformer"]), int(row["length"])
        assert float(row["ev_on_transformer_share"]) == pytest.approx(count / length)
        assert row["performance"] != ""
    rounds = read_csv(run_dir / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]
    for row in rounds[1:]:
        assert float(row["kl_prev"]) <= 0.05
        assert int(row["buffer_demo"]) == 12 and int(row["buffer_online"]) == 2 * int(row["round"])
        assert float(row["demo_fraction"]) == 0.25
        for key in ("loss", "entropy", "temperature", "kl_offline", "wall_time_s", "env_steps"):
            assert math.isfinite(float(row[key])), key
    assert float(rounds[0]["kl_offline"]) == 0.0
    assert rounds[0]["eval_return"] != "nan" and rounds[2]["eval_return"] != "nan"
    assert rounds[1]["eval_return"] == "nan"  # eval_every=2


def test_bad_config_names_the_field(dataset):
    with pytest.raises(ConfigError, match=r"online\.demo_fraction"):
        validate_config(OnlineConfig, {"dataset": dataset, "online": {"demo_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"online\.strategy"):
        validate_config(OnlineConfig, {"dataset": dataset, "online": {"strategy": "best:3"}})
    with pytest.raises(ConfigError, match=r"offline\.n_layr"):
        validate_config(OnlineConfig, {"dataset": dataset, "offline": {"n_layr": 2}})


# ----------------------------------------------------------------------------- command line


def test_train_online_from_a_pretrained_run_matches_inline_pretraining(fixed_target_run, tmp_path):
    from typer.testing import CliRunner

    from ogm.cli.main import app

    _, inline = fixed_target_run
    out = tmp_path / "odt"
    settings = ["num_envs=2", "eval_episodes=2", "device='cpu'", "online.rounds=0"]
    result = CliRunner().invoke(
        app,
        ["train-online", "--pretrained", str(inline / "offline"), "--out", str(out)]
        + [arg for s in settings for arg in ("--set", s)],
    )
    assert result.exit_code == 0, result.output
    # dataset and env come from the pretrained run; the same model gives the same evaluation
    record = read_csv(out / "episodes.csv")
    expected = [r for r in read_csv(inline / "episodes.csv") if r["round"] == "0"]
    assert record == expected

    missing = CliRunner().invoke(
        app, ["train-online", "--pretrained", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_resume_of_a_finished_or_missing_run(fixed_target_run, tmp_path):
    from typer.testing import CliRunner

    from ogm.cli.main import app

    _, run_dir = fixed_target_run
    rows = (run_dir / "episodes.csv").read_text()
    done = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert done.exit_code == 0 and "already done" in done.output
    assert (run_dir / "episodes.csv").read_text() == rows
    missing = CliRunner().invoke(app, ["resume", str(tmp_path)])
    assert missing.exit_code == 2 and "run.json is missing" in missing.output
