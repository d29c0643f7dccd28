"""Online finetuning (ODT): hindsight relabelling, demo share, temperature, KL cap, preset,
logs."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ogm.agents.actor import EpisodeResult
from ogm.data import Trajectory, collect, write_dataset
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train import online
from ogm.train.config import ConfigError, validate_config
from ogm.train.offline import load_model
from ogm.train.online import (
    PROBE,
    Learner,
    OnlineConfig,
    OnlineSection,
    acting_probe,
    derive_seed,
    policy_kl,
    probe_policy,
    run,
    sample_batch,
    target_entropy,
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
        "checkpoint_every": 1,
        "probe_segments": 16,
        "kl_check_every": 3,
    }
    return OnlineConfig(
        env_id=ENV,
        dataset=dataset,
        num_envs=2,
        eval_episodes=2,
        eval_every=400,  # environment steps: the 2 rounds of 2 episodes of 100 steps
        device="cpu",
        offline=TINY_OFFLINE,
        online={**base, **online},
    )


def tiny_model(demos: list[Trajectory], seed: int = 0, dropout: float = 0.0) -> DecisionTransformer:
    """An untrained DT for ``demos``' observations (near uniform policy)."""
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
            dropout=dropout,
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


def segment_tags(batch) -> np.ndarray:
    """The tag of each segment of a batch of :func:`tagged` trajectories."""
    return batch.observations[:, -1].flatten(1).amax(1).numpy()  # last step is never padding


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- demo_fraction


@pytest.mark.parametrize("demo_fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_demo_fraction_is_the_exact_share_of_every_batch(demos, demo_fraction, batch_size):
    demo_pool = TrajectoryPool([tagged(t, 1, "demo") for t in demos])
    online_pool = TrajectoryPool([tagged(t, 2, "online") for t in demos])
    rng = np.random.default_rng(0)
    expected = round(demo_fraction * batch_size)
    for _ in range(20):
        batch, n_demo = sample_batch(demo_pool, online_pool, batch_size, demo_fraction, 5, rng)
        tags = segment_tags(batch)
        assert len(batch) == batch_size and n_demo == expected
        assert (tags[:expected] == 1).all() and (tags[expected:] == 2).all()


def test_odt_mode_draws_from_the_whole_buffer_and_counts_its_demonstrations(demos):
    """``demo_fraction=None``: segments come from the mixed buffer in proportion to length,
    and the count returned is the true number of demonstration segments in the batch."""
    buffer = ReplayBuffer(30, [tagged(t, 3, "demo") for t in demos])
    buffer.add([tagged(t, 2, "online") for t in demos[:4]])
    demo_pool = TrajectoryPool(buffer.from_source("demo"))
    online_pool = TrajectoryPool(buffer.from_source("online"))
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(400):
        batch, n_demo = sample_batch(demo_pool, online_pool, 16, None, 5, rng)
        assert len(batch) == 16 and int((segment_tags(batch) == 3).sum()) == n_demo
        shares.append(n_demo / 16)
    steps = demo_pool.num_steps / (demo_pool.num_steps + online_pool.num_steps)
    assert np.mean(shares) == pytest.approx(steps, abs=0.02)
    # once the buffer holds no demonstration, no batch has any
    batch, n_demo = sample_batch(None, online_pool, 16, None, 5, rng)
    assert n_demo == 0 and (segment_tags(batch) == 2).all()


class SourcedPool(TrajectoryPool):
    """A pool that remembers the sources of its trajectories."""

    def __init__(self, trajectories) -> None:
        super().__init__(trajectories)
        self.sources = {t.source for t in trajectories}


@pytest.mark.parametrize("demo_fraction", [0.0, 0.25, None])
def test_every_batch_of_a_run_holds_the_set_share_of_demonstrations(
    fixed_target_run, dataset, monkeypatch, tmp_path, demo_fraction
):
    """Demonstrations are counted wherever a batch takes them from: a set share draws them
    from the demonstrations alone and the rest from online episodes alone (the buffer holds
    no demonstration); ODT's mixed buffer is logged with its effective share."""
    draws = []

    def spy(demo_pool, online_pool, *args):
        batch, n_demo = sample_batch(demo_pool, online_pool, *args)
        demo_sources = demo_pool.sources if demo_pool is not None else set()
        draws.append((demo_sources, online_pool.sources, n_demo / len(batch)))
        return batch, n_demo

    monkeypatch.setattr(online, "TrajectoryPool", SourcedPool)
    monkeypatch.setattr(online, "sample_batch", spy)
    _, inline = fixed_target_run
    config = tiny_config(
        dataset, rounds=2, demo_fraction=demo_fraction, updates_per_round=8, batch_size=16
    ).model_copy(update={"pretrained": str(inline / "offline"), "eval_episodes": 0})
    run(config, tmp_path / "odt")
    assert len(draws) == 16
    rounds = read_csv(tmp_path / "odt" / "rounds.csv")[1:]
    if demo_fraction is None:
        assert all(d == {"demo"} and o == {"online"} for d, o, _ in draws)
        assert 0 < np.mean([share for *_, share in draws]) < 1  # the share the buffer gives
        assert [int(r["buffer_demo"]) for r in rounds] == [12, 12]
    else:
        expected = round(demo_fraction * 16) / 16
        assert all(d <= {"demo"} and o == {"online"} for d, o, _ in draws)
        assert all(share == expected for *_, share in draws)
        assert [int(r["buffer_demo"]) for r in rounds] == [0, 0]
    logged = [float(r["demo_share"]) for r in rounds]
    assert logged == pytest.approx([np.mean([s for *_, s in draws[i : i + 8]]) for i in (0, 8)])


# ----------------------------------------------------------------------------- temperature


def entropy_run(model, demos, target: float, steps: int) -> tuple[list[float], list[float]]:
    """Entropy and temperature over ``steps`` updates on demo batches."""
    cfg = OnlineConfig(dataset="unused", online={"temperature_lr": 0.05, "learning_rate": 3e-3})
    learner = Learner(model, cfg, target)
    pool, rng = TrajectoryPool(demos), np.random.default_rng(0)
    entropies, alphas = [], []
    for _ in range(steps):
        stats = learner.update(pool.sample(16, 5, rng))
        entropies.append(stats["entropy"])
        alphas.append(learner.alpha)
    return entropies, alphas


def test_temperature_falls_when_entropy_is_above_target(demos):
    model = tiny_model(demos)  # untrained: near uniform, entropy ~ log 4
    target = 0.1 * math.log(4)
    entropies, alphas = entropy_run(model, demos, target, steps=30)
    assert entropies[0] > target
    assert all(b < a for a, b in zip([0.1, *alphas], alphas, strict=False))


def test_temperature_rises_when_entropy_is_below_target_and_drives_it_there(demos):
    model = tiny_model(demos)
    # Behaviour cloning without entropy bonus first: the policy's entropy drops well below
    # the target, then the learned temperature has to bring it back up.
    learner = Learner(
        model,
        OnlineConfig(dataset="unused", online={"entropy": False, "learning_rate": 3e-3}),
        0.0,
    )
    pool, rng = TrajectoryPool(demos), np.random.default_rng(1)
    for _ in range(300):
        learner.update(pool.sample(16, 5, rng))
    target = 0.99 * math.log(4)
    entropies, alphas = entropy_run(model, demos, target, steps=150)
    assert entropies[0] < target - 0.3
    assert alphas[-1] > 10 * 0.1  # the temperature rose while entropy was below target
    start_gap = target - entropies[0]
    end_gap = abs(target - np.mean(entropies[-20:]))
    assert end_gap < 0.1 * start_gap


def test_default_target_entropy_is_the_offline_policys_on_demonstrations(demos):
    model = tiny_model(demos, dropout=0.1)
    pool, rng = TrajectoryPool(demos), np.random.default_rng(1)
    cloning = OnlineConfig(dataset="unused", online={"entropy": False, "learning_rate": 3e-3})
    learner = Learner(model, cloning, 0.0)
    for _ in range(100):
        learner.update(pool.sample(16, 5, rng))
    probe = pool.sample(64, 5, np.random.default_rng(3))
    probe.mask[:, :2] = False  # padded steps do not count

    def mean_entropy(training: bool) -> float:
        model.train(training)
        with torch.no_grad():
            out = model(
                probe.returns_to_go, probe.observations, probe.actions, probe.timesteps, probe.mask
            )
        return float(out.policy.entropy()[probe.mask].mean())

    torch.manual_seed(11)
    expected = mean_entropy(True)  # with dropout, as the loss and its dual step see it
    model.eval()
    generator = torch.random.get_rng_state()
    assert target_entropy(model, None, probe, seed=11) == pytest.approx(expected)
    assert torch.equal(torch.random.get_rng_state(), generator)  # the run's stream untouched
    assert not model.training
    assert expected != pytest.approx(mean_entropy(False), abs=1e-3)  # dropout counts
    assert target_entropy(model, 0.2, probe, seed=11) == 0.2  # an explicit value wins
    continuous = DecisionTransformer(
        DTConfig(
            obs_shape=(3,),
            act_dim=2,
            discrete=False,
            action_low=(-1.0, -1.0),
            action_high=(1.0, 1.0),
            return_bin_edges=(0.0, 1.0, 2.0),
        )
    )
    assert target_entropy(continuous, None, probe, seed=11) == -2.0  # ODT's -|A|


def test_entropy_off_means_zero_temperature_and_no_dual_update(demos):
    model = tiny_model(demos)
    learner = Learner(model, OnlineConfig(dataset="unused", online={"entropy": False}), 0.5)
    log_alpha = learner.log_alpha.item()
    pool, rng = TrajectoryPool(demos), np.random.default_rng(0)
    for _ in range(3):
        learner.update(pool.sample(8, 5, rng))
    assert learner.alpha == 0.0
    assert learner.log_alpha.item() == log_alpha


# ----------------------------------------------------------------------------- KL cap


def capped_round(demos, max_kl, backtracks=10, updates=60):
    """``updates`` behaviour-cloning updates of an untrained model under the cap."""
    pool = TrajectoryPool(demos)
    probes = {"demo": pool.sample(32, 5, np.random.default_rng(7))}
    model = tiny_model(demos)
    learner = Learner(model, OnlineConfig(dataset="unused", online={"learning_rate": 3e-3}), 0.5)
    before = probe_policy(model, probes["demo"])
    rng = np.random.default_rng(0)
    done = train_round(
        learner, lambda: (pool.sample(16, 5, rng), 0), updates, probes, max_kl, 5, backtracks
    )
    measured = policy_kl(before, probe_policy(model, probes["demo"]), probes["demo"].mask)
    assert done.kl["demo"] == pytest.approx(measured)  # the KL reported is the model's
    return done


@pytest.mark.parametrize("max_kl", [0.002, 0.02])
def test_shift_cap_holds_the_measured_kl_under_its_bound(demos, max_kl):
    free = capped_round(demos, None)
    assert (len(free.stats), free.capped) == (60, False)
    assert free.kl["demo"] > max_kl  # without the cap the policy moves further than the bound
    done = capped_round(demos, max_kl)
    assert done.capped and len(done.stats) < 60 and len(done.stats) % 5 == 0
    assert 0 < done.kl["demo"] <= max_kl


def test_a_cap_tighter_than_one_block_slows_learning_instead_of_stopping_it(demos):
    # taking the whole block back leaves the policy where it was: every round alike, for good
    stalled = capped_round(demos, 1e-5, backtracks=0)
    assert stalled.capped and len(stalled.stats) == 0 and stalled.block_fraction == 0.0
    assert stalled.kl["demo"] == 0.0
    # halving the block's step back until it fits moves the policy up to the cap
    moving = capped_round(demos, 1e-5)
    assert moving.capped and len(moving.stats) == 0 and 0 < moving.block_fraction < 1
    assert 0 < moving.kl["demo"] <= 1e-5


def with_channel(traj: Trajectory, value: int) -> Trajectory:
    """A copy with one more observation channel, filled with ``value``."""
    extra = np.full((len(traj.observations), 1, *traj.observations.shape[2:]), value)
    observations = np.concatenate((traj.observations, extra.astype(traj.observations.dtype)), 1)
    return Trajectory(
        observations=observations,
        actions=traj.actions,
        rewards=traj.rewards,
        terminations=traj.terminations,
        truncations=traj.truncations,
        source="online" if value else "demo",
    )


class OnlineOnlyLearner(Learner):
    """Updates that move the policy on a channel only online episodes light up."""

    def update(self, batch) -> dict[str, float]:
        with torch.no_grad():
            self.model.embed_obs[0].weight[:, -1] += 0.05
        return {}


def test_shift_cap_detects_a_change_confined_to_online_states(demos):
    """A new object channel that no demonstration shows: changing the policy's response to
    it leaves every demonstration state as it was, so a cap probing demonstrations alone
    lets any change through; the probe of the round's own episodes catches it."""
    demo_states = [with_channel(t, 0) for t in demos]
    online_states = [with_channel(t, 1) for t in demos]
    rng = np.random.default_rng(0)
    probes = {
        "demo": TrajectoryPool(demo_states).sample(32, 5, rng),
        "online": TrajectoryPool(online_states).sample(32, 5, rng),
    }
    pool = TrajectoryPool(demo_states)
    cloned = tiny_model(demo_states)  # a policy that acts on its inputs: cloned demonstrations
    learner = Learner(
        cloned,
        OnlineConfig(dataset="unused", online={"entropy": False, "learning_rate": 3e-3}),
        0.0,
    )
    for _ in range(200):
        learner.update(pool.sample(16, 5, rng))

    def capped(probes):
        model = copy.deepcopy(cloned)
        learner = OnlineOnlyLearner(model, OnlineConfig(dataset="unused"), 0.5)
        sample = lambda: (pool.sample(4, 5, rng), 0)  # noqa: E731
        return train_round(learner, sample, 20, probes, 0.01, 5, 10), model

    blind, model = capped({"demo": probes["demo"]})
    assert not blind.capped and blind.kl["demo"] == 0.0 and len(blind.stats) == 20
    start = probe_policy(cloned, probes["online"])
    assert policy_kl(start, probe_policy(model, probes["online"]), probes["online"].mask) > 0.01

    seen, _ = capped(probes)
    assert seen.capped and len(seen.stats) < 20
    assert seen.kl["demo"] == 0.0 and 0 < seen.kl["online"] <= 0.01


def test_online_probe_feeds_the_returns_to_go_the_policy_acted_on(demos):
    """Target asked for minus rewards so far, as when acting; not the hindsight values."""
    targets = (5.0, 30.0, -2.0)
    results = [
        EpisodeResult(tagged(t, i + 1, "online"), target)
        for i, (t, target) in enumerate(zip(demos, targets, strict=False))
    ]
    probe = acting_probe(results, 64, 5, np.random.default_rng(0))
    for seg, tag in enumerate(segment_tags(probe)):
        traj, target = results[tag - 1].trajectory, targets[tag - 1]
        m = probe.mask[seg]
        so_far = np.concatenate(([0.0], np.cumsum(traj.rewards)))[probe.timesteps[seg][m]]
        np.testing.assert_allclose(probe.returns_to_go[seg, m, 0], target - so_far, atol=1e-3)


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


# ----------------------------------------------------------------------------- preset


def test_odt_preset_gives_odts_settings_and_explicit_fields_override_it(dataset):
    odt = OnlineConfig(dataset=dataset, online={"preset": "odt"}).online
    assert (odt.episodes_per_round, odt.updates_per_round, odt.batch_size) == (1, 300, 256)
    assert (odt.strategy, odt.demo_fraction, odt.max_kl_per_round) == ("odt:2", None, None)
    assert (odt.learning_rate, odt.init_temperature, odt.temperature_lr) == (1e-4, 0.1, 1e-4)
    mine = OnlineConfig(
        dataset=dataset,
        online={"preset": "odt", "updates_per_round": 40, "demo_fraction": 0.5},
    )
    assert (mine.online.updates_per_round, mine.online.demo_fraction) == (40, 0.5)
    assert mine.online.episodes_per_round == 1 and mine.online.strategy == "odt:2"
    # the resolved config (what run.json keeps) validates back to the same settings
    assert OnlineConfig.model_validate(mine.model_dump()) == mine
    with pytest.raises(ConfigError, match=r"online\.preset"):
        validate_config(OnlineConfig, {"dataset": dataset, "online": {"preset": "odt2"}})


def test_odt_preset_runs_odts_loop_exploring_at_twice_the_evaluation_target(
    fixed_target_run, dataset, tmp_path
):
    _, inline = fixed_target_run
    config = OnlineConfig(
        env_id=ENV,
        dataset=dataset,
        num_envs=2,
        eval_episodes=0,
        device="cpu",
        pretrained=str(inline / "offline"),
        online={"preset": "odt", "rounds": 2, "updates_per_round": 4, "eval_strategy": "fixed:7"},
    )
    run(config, tmp_path / "odt")
    train = [r for r in read_csv(tmp_path / "odt" / "episodes.csv") if r["phase"] == "train"]
    assert [int(r["round"]) for r in train] == [1, 2]  # one new episode per round
    assert all(float(r["target_return"]) == 14.0 for r in train)  # ODT's online_rtg
    rounds = read_csv(tmp_path / "odt" / "rounds.csv")[1:]
    assert [int(r["updates_kept"]) for r in rounds] == [4, 4]  # explicit beats the preset
    # one buffer, demonstrations included: the logged share is the buffer's, not a setting
    assert [int(r["buffer_demo"]) for r in rounds] == [12, 12]
    assert all(0 < float(r["demo_share"]) < 1 and r["demo_fraction"] == "nan" for r in rounds)


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
    rows = [r for r in read_csv(run_dir / "episodes.csv") if r["phase"] == "train"]
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
    assert [r["phase"] for r in episodes] == ["eval"] * 4 + ["train"] * 4 + ["eval"] * 4
    online = [r for r in episodes if r["phase"] == "train"]
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
        assert 0 <= int(row["updates_kept"]) <= 6
        for probe in ("demo", "online"):  # the cap holds on both probes
            assert 0 <= float(row[f"kl_prev_{probe}"]) <= 0.05
            assert math.isfinite(float(row[f"kl_offline_{probe}"]))
        # a set demo share keeps the demonstrations out of the buffer
        assert int(row["buffer_demo"]) == 0 and int(row["buffer_online"]) == 2 * int(row["round"])
        assert float(row["demo_fraction"]) == 0.25
        if int(row["updates_kept"]) > 0:
            assert float(row["demo_share"]) == 0.25
            assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["entropy"]))
        for key in ("temperature", "target_entropy", "wall_time_s", "env_steps"):
            assert math.isfinite(float(row[key])), key
    assert float(rounds[0]["kl_offline_demo"]) == 0.0
    assert rounds[0]["eval_return_greedy"] != "nan" and rounds[2]["eval_return_greedy"] != "nan"
    assert rounds[1]["eval_return_greedy"] == "nan"  # evaluated at round 0 and the last round


def test_target_entropy_is_measured_once_on_the_offline_policy_and_kept(fixed_target_run, demos):
    config, run_dir = fixed_target_run
    model = load_model(run_dir / "offline").set_precision(config.torch_precision())
    probe = TrajectoryPool(demos).sample(
        config.online.probe_segments, 5, np.random.default_rng([config.seed, PROBE])
    )
    expected = target_entropy(model, None, probe, derive_seed(config.seed, PROBE))
    logged = [float(r["target_entropy"]) for r in read_csv(run_dir / "rounds.csv")]
    assert logged == pytest.approx([expected] * 3)
    assert load_checkpoint(run_dir).state["target_entropy"] == pytest.approx(expected)


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


def test_a_budget_in_environment_steps_ends_with_the_round_that_reaches_it(
    fixed_target_run, tmp_path
):
    config, inline = fixed_target_run
    online = config.online.model_dump(exclude={"updates_per_round"})
    # and the updates come from the replay ratio: one per 32 environment steps
    online.update(rounds=5, total_timesteps=300, updates_per_step=1 / 32)
    budgeted = config.model_copy(
        update={"pretrained": str(inline / "offline"), "online": type(config.online)(**online)}
    )
    run(budgeted, tmp_path / "odt")
    info = json.loads((tmp_path / "odt" / "run.json").read_text())
    # 2 episodes of 100 steps a round: 200 < 300, then 400 >= 300 ends the phase
    assert (info["rounds"], info["env_steps"]) == (2, 400)
    rounds = read_csv(tmp_path / "odt" / "rounds.csv")
    assert [r["updates_kept"] for r in rounds] == ["0", "6", "6"]
    assert rounds[-1]["eval_return_greedy"] not in ("", "nan")  # the last round is evaluated
    assert load_checkpoint(tmp_path / "odt").step == 2  # and checkpointed


def test_the_replay_ratio_counts_updates_from_the_start_of_the_run():
    section = OnlineSection(updates_per_step=1 / 32)
    # rounds of uneven length: the fractions carry over, the total never drifts
    bounds = [0, 20, 45, 45, 1600, 1619]
    updates = [section.round_updates(a, b) for a, b in itertools.pairwise(bounds)]
    assert updates == [0, 1, 0, 49, 0] and sum(updates) == 1619 // 32
    assert OnlineSection(**section.model_dump()) == section  # as the runner stores it
    assert OnlineSection(updates_per_round=7).round_updates(0, 1000) == 7
    assert OnlineSection().round_updates(0, 1000) == 300  # ODT's, by default
    with pytest.raises(ValidationError, match="not both"):
        OnlineSection(updates_per_round=7, updates_per_step=0.1)
    # ODT's preset sets 300 per round; a config's own replay ratio replaces it
    preset = OnlineConfig(env_id=ENV, online={"preset": "odt", "updates_per_step": 0.5})
    assert preset.online.round_updates(0, 10) == 5


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
