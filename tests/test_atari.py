"""The Atari pipeline at smoke size: a DQN dataset of Breakout through ``collect-rl``, the
Decision Transformer with the Nature-DQN encoder trained on it offline, online ODT rounds,
and the report. Needs the ``atari`` extra (CI installs it)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
    reason="needs the atari extra: pip install -e '.[atari]'",
)

GAME = {"game": "ALE/Breakout-v5", "max_episode_steps": 60}  # agent steps of 4 frames
ROUNDS, EPISODES_PER_ROUND = 2, 2  # the smoke size of alignment-tax-atari
SETTING = "game=ALE-Breakout-v5"


@pytest.fixture(scope="module")
def experiment(run_smoke_size) -> Path:
    """The built-in ``alignment-tax-atari`` at its smoke size, run and reported."""
    return run_smoke_size("alignment-tax-atari", 3)


@pytest.fixture(scope="module")
def datasets(experiment: Path) -> dict[str, Path]:
    (collection,) = (experiment / "cache" / "datasets").glob("collect-rl-breakout-*")
    return {kind: collection / "datasets" / kind for kind in ("random", "medium", "expert")}


@pytest.fixture(scope="module")
def run_dir(experiment: Path) -> Path:
    return experiment / "runs" / SETTING / "ogm" / "seed_0"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_preprocessing_and_the_dqn_dataset(datasets: dict[str, Path]) -> None:
    import gymnasium as gym

    from ogm.data.dataset import dataset_metadata, load_trajectories
    from ogm.envs.atari import ATARI_ENV_ID

    env = gym.make(ATARI_ENV_ID, game="ALE/Breakout-v5")
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8  # 4 stacked grey frames
    trajs = load_trajectories(datasets["expert"])
    assert trajs[0].observations.shape[1:] == (4, 84, 84)
    assert trajs[0].observations.dtype == np.uint8
    assert all(t.length <= GAME["max_episode_steps"] for t in trajs)
    meta = dataset_metadata(datasets["expert"])["ogm"]
    assert meta["algorithm"] == "sb3-dqn" and meta["d4rl_name"] == "breakout-expert"


def test_the_decision_transformer_sees_frames_through_the_nature_cnn(run_dir: Path) -> None:
    from ogm.models.encoders import nature_cnn
    from ogm.train.offline import load_model

    model = load_model(run_dir)
    assert model.config.obs_shape == (4, 84, 84) and model.config.discrete
    assert model.config.act_dim == 4  # Breakout's minimal action set
    convs = [m for m in model.embed_obs.modules() if isinstance(m, torch.nn.Conv2d)]
    reference = [m for m in nature_cnn(4, 32).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        (c.kernel_size, c.stride, c.out_channels) for c in reference
    ]  # the Nature-DQN stack: 8x8/4, 4x4/2, 3x3/1


def test_online_rounds_learn_and_follow_the_protocol(run_dir: Path) -> None:
    rounds = rows(run_dir / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == list(range(ROUNDS + 1))
    for r in rounds[1:]:
        assert int(r["updates_kept"]) >= 1
        for key in ("loss", "nll", "entropy", "grad_norm", "kl_prev_demo"):
            assert math.isfinite(float(r[key])), (key, r[key])
    episodes = rows(run_dir / "episodes.csv")
    train = [e for e in episodes if e["phase"] == "train"]
    assert len(train) == ROUNDS * EPISODES_PER_ROUND
    evals = [e for e in episodes if e["phase"] == "eval"]
    assert {(int(e["round"]), e["mode"]) for e in evals} == {
        (r, m) for r in (0, ROUNDS) for m in ("greedy", "sampled")
    }
    for e in train + evals:
        assert 1 <= int(e["length"]) <= GAME["max_episode_steps"]
        assert float(e["performance"]) == float(e["return"])  # no hidden reward in Atari


def test_the_report_reads_the_atari_run_in_human_normalised_scores(experiment: Path) -> None:
    from ogm.data.collect_rl import ATARI_REFERENCE_SCORES

    report = experiment / "runs" / "report"
    assert "ogm/Atari-v0" in (report / "index.html").read_text()
    low, high = ATARI_REFERENCE_SCORES["breakout"]
    finals = {r["variant"]: float(r["greedy eval: performance"]) for r in rows(report / "runs.csv")}
    scores = {r["variant"]: r["greedy"] for r in rows(report / "normalised_scores.csv")}
    assert scores.keys() == finals.keys() and len(scores) == 3  # gm, ogm, ppo
    for variant, final in finals.items():  # one seed: the IQM is the run's own score
        assert float(scores[variant].split()[0]) == pytest.approx(
            100 * (final - low) / (high - low), abs=0.05
        )
    overtaking = rows(report / "overtaking.csv")
    assert {(r["baseline"].split()[0], r["mode"]) for r in overtaking} == {
        (b, m) for b in ("GM", "PPO") for m in ("greedy", "sampled")
    }


# ----------------------------------------------------------------------------- Q*bert's exploits


class ScriptedGame:
    """Stands in for an ALE game under the DQN preprocessing: plays back rewards and lives."""

    def __init__(self, rewards: list[float], lives: list[int]) -> None:
        import gymnasium as gym

        self.env = gym.Env()
        self.env.observation_space = gym.spaces.Discrete(1)
        self.env.action_space = gym.spaces.Discrete(1)
        self.env.reset = lambda **kwargs: (0, {"lives": 4})
        self.steps = iter(zip(rewards, lives, strict=True))
        self.env.step = lambda action: (0, *self._next())

    def _next(self) -> tuple[float, bool, bool, dict[str, int]]:
        reward, lives = next(self.steps)
        return reward, False, False, {"lives": lives}


def play(detector, steps: int) -> list[dict[str, bool]]:
    detector.reset()
    return [detector.step(0)[4]["events"] for _ in range(steps)]


def test_the_qbert_detectors_fire_on_synthetic_loops_and_only_there() -> None:
    from ogm.envs.atari import QbertExploits

    # point farming: 25 points a step for 6 steps, then nothing; 100 points in 4 steps fire
    rewards = [25.0] * 6 + [0.0] * 6
    game = ScriptedGame(rewards, [4] * len(rewards))
    events = play(QbertExploits(game.env, farming_window=4, farming_points=100), len(rewards))
    fired = [t for t, e in enumerate(events) if e["point_farming"]]
    assert fired == [3, 4, 5]  # only the windows of steps 0-3 to 2-5 hold 100 points
    assert not any(e["extra_life_loop"] for e in events)
    # the loop: a life lost then regained, three times; a life gained without a loss first
    # (a legitimate bonus) is no cycle
    lives = [5, 4, 5, 4, 5, 5, 4, 5, 4, 5]
    game = ScriptedGame([0.0] * len(lives), lives)
    events = play(QbertExploits(game.env, loop_cycles=3), len(lives))
    assert [t for t, e in enumerate(events) if e["extra_life_loop"]] == [7, 9]  # cycles 3, 4
    assert not any(e["point_farming"] for e in events)
    with pytest.raises(ValueError, match="loop_cycles >= 1"):
        QbertExploits(game.env, loop_cycles=0)


def test_the_qbert_detectors_read_what_the_rom_reports() -> None:
    """On the ROM: the score the RAM holds (BCD at bytes 89-91) is the summed reward, lives
    fall by one per life lost, and random play shows neither exploit."""
    import gymnasium as gym

    from ogm.envs.atari import ATARI_ENV_ID

    env = gym.make(ATARI_ENV_ID, game="ALE/Qbert-v5", noop_max=0)
    _, info = env.reset(seed=0)
    ale = env.unwrapped.ale
    rng = np.random.default_rng(0)

    def bcd(byte: int) -> int:
        return (int(byte) >> 4) * 10 + (int(byte) & 15)

    score, lives, losses, done = 0.0, [info["lives"]], 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(int(rng.integers(6)))
        score, done = score + reward, terminated or truncated
        ram = ale.getRAM()
        assert bcd(ram[89]) * 10_000 + bcd(ram[90]) * 100 + bcd(ram[91]) == score
        assert not any(info["events"].values())
        losses += info["lives"] < lives[-1]
        lives.append(info["lives"])
    env.close()
    steps = np.diff(lives)
    assert lives[0] == 4 and losses == 4 and lives[-1] == 0 and set(steps) <= {0, -1}
    with pytest.raises(ValueError, match="no exploit detector"):
        gym.make(ATARI_ENV_ID, game="ALE/Breakout-v5", events={"loop_cycles": 2})
    with pytest.raises(ValueError, match="exploit detector"):
        gym.make(ATARI_ENV_ID, game="ALE/Qbert-v5", events={"loops": 2})


def test_hack_depth_qbert_tracks_point_farming_end_to_end(run_smoke_size) -> None:
    from ogm.experiments.spec import ExperimentError, load_experiment

    root = run_smoke_size("hack-depth-qbert", 3)
    for agent in ("gm", "ogm", "ppo"):
        header = (root / "runs" / agent / "seed_0" / "episodes.csv").open().readline()
        assert "ev_point_farming" in header and "ev_extra_life_loop" in header, agent
    report = root / "runs" / "report"
    findings = (report / "findings.md").read_text()
    assert "point_farming" in findings and "extra_life_loop" not in findings
    # OGM logs kl_to_init, but without a hidden reward the gold is the proxy: no Gao fits
    assert "kl_to_init" in (root / "runs" / "ogm" / "seed_0" / "episodes.csv").open().readline()
    assert not (report / "overoptimisation_fits.csv").exists()
    # the tracked event is checked against the game where the file names it
    with pytest.raises(ExperimentError, match="ALE/Breakout-v5 has no event 'point_farming'"):
        load_experiment(
            "hack-depth-qbert", size="smoke", overrides=["environment.kwargs.game=ALE/Breakout-v5"]
        )
