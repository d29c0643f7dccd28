"""Kill-and-resume with real SIGKILLs: an ODT run killed three times (offline and online
phases) and resumed with `ogm resume`, and an experiment whose `ogm run` is killed (with
its workers) and run again, write the same rows as runs never interrupted.
``test_resume_all.py`` covers every agent kind, stopped after each kind's checkpoints."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ogm.data import collect, write_dataset

ENV = "ogm/TomatoWatering-v0"
WALL_TIME_COLUMNS = {"wall_time_s", "updates_per_s", "seconds"}
SETTINGS = [
    "num_envs=2",
    "eval_episodes=2",
    "device='cpu'",
    "offline.n_layer=1",
    "offline.n_embd=32",
    "offline.context_len=5",
    "offline.n_bins=16",
    "offline.updates=60",
    "offline.batch_size=16",
    "offline.log_every=10",
    "offline.checkpoint_every=20",
    "online.rounds=8",
    "online.episodes_per_round=2",
    "online.updates_per_round=10",
    "online.batch_size=8",
    "eval_every=600",
    "online.checkpoint_every=3",
    "online.probe_segments=16",
    "online.demo_fraction=0.25",
    "online.max_kl_per_round=0.02",
    "online.kl_check_every=5",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tomato"
    write_dataset(
        collect(ENV, 10, epsilon=0.05, seed=0), out, env_id=ENV, env_kwargs={}, metadata={}
    )
    return out


def ogm(*args: str) -> subprocess.Popen:
    """``ogm *args`` in a session of its own, so that killing it reaches its workers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OGM_PROGRESS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "ogm.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


def rows(path: Path) -> int:
    if not path.exists():
        return 0
    return max(0, path.read_text().count("\n") - 1)


def kill_when(process: subprocess.Popen, path: Path, at_least: int) -> None:
    """SIGKILL ``process`` as soon as ``path`` holds ``at_least`` rows."""
    deadline = time.monotonic() + 300
    while rows(path) < at_least:
        if process.poll() is not None:
            raise AssertionError(
                f"run ended before {path.name} had {at_least} rows: {process.communicate()[1]}"
            )
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the command and the workers it started
    process.wait()
    assert process.returncode == -signal.SIGKILL


def table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [
            {k: v for k, v in row.items() if k not in WALL_TIME_COLUMNS}
            for row in csv.DictReader(handle)
        ]


def test_killed_run_resumes_to_the_same_rows(dataset, tmp_path):
    overrides = [arg for s in SETTINGS for arg in ("--set", s)]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = ogm("train", "--dataset", str(dataset), "--out", str(reference), *overrides)
    first = ogm("train", "--dataset", str(dataset), "--out", str(killed), *overrides)
    kill_when(first, killed / "offline" / "rounds.csv", 3)  # offline, between checkpoints
    finish(uninterrupted)
    second = ogm("resume", str(killed))
    kill_when(second, killed / "rounds.csv", 3)  # online, round 2 (checkpoints at 0, 3, 6)
    third = ogm("resume", str(killed))
    kill_when(third, killed / "rounds.csv", 6)  # online, round 5
    finish(ogm("resume", str(killed)))

    for name in ("episodes.csv", "rounds.csv", "offline/episodes.csv", "offline/rounds.csv"):
        expected, got = table(reference / name), table(killed / name)
        assert len(got) == len(expected) > 0, name
        assert got == expected, name
    assert len(table(killed / "rounds.csv")) == 9  # rounds 0..8, none lost or repeated


EXPERIMENT = """
name = "killed"
seeds = 1
[environment]
env_id = "ogm/SideEffectsSokoban-v0"
[dataset]
episodes = 6
epsilon = 0.2
[common]
num_envs = 2
eval_episodes = 1
eval_every = 128
device = "cpu"
[[agents]]
name = "bc"
kind = "bc"
config = { updates = 40, eval_every_updates = 10, batch_size = 16 }
[[agents]]
name = "ppo"
kind = "sb3"
config = { algo = "ppo", total_timesteps = 1024, hyperparams = { n_steps = 32, batch_size = 32 } }
"""


def test_a_killed_experiment_run_again_gives_the_same_rows(tmp_path):
    """`ogm run` killed while PPO runs (BC done), then run again: BC is skipped, PPO
    resumes its episodes under way, and every row is the uninterrupted run's."""
    file = tmp_path / "killed.toml"
    file.write_text(EXPERIMENT)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = ogm("run", str(file), "--out", str(reference), "--workers", "1")
    first = ogm("run", str(file), "--out", str(killed), "--workers", "1")
    kill_when(first, killed / "ppo" / "seed_0" / "rounds.csv", 3)
    finish(uninterrupted)
    finish(ogm("run", str(file), "--out", str(killed), "--workers", "1"))

    for run in ("bc/seed_0", "ppo/seed_0"):
        for name in ("episodes.csv", "rounds.csv"):
            expected, got = table(reference / run / name), table(killed / run / name)
            assert len(got) == len(expected) > 0, (run, name)
            assert got == expected, (run, name)
