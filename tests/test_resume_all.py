"""Every agent kind resumes to the same rows as a run never interrupted.

A run killed at any moment leaves its latest checkpoint and log rows written after it,
perhaps the last one half-written. ``stop_after_previous_checkpoint`` makes a finished run
look exactly so (its latest checkpoint dropped, a torn row appended), and ``ogm resume``,
run from another working directory, must then write the very rows of the uninterrupted
run: episodes under way at the checkpoint continue where they were (SB3 and KL-PPO save
the vector env, the partial episodes and the agent's contexts). ``test_resume.py`` kills
real processes, through ``ogm train`` and through ``ogm run``.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from entrypoint import run_ogm
from ogm.baselines.bc import BCConfig
from ogm.baselines.best_of_n import BestOfNConfig
from ogm.baselines.kl_ppo import KLPPOConfig
from ogm.baselines.sb3 import SB3Config
from ogm.data import collect, write_dataset
from ogm.experiments import registry
from ogm.train.offline import OfflineConfig
from ogm.train.online import OnlineConfig

SOKOBAN = "ogm/SideEffectsSokoban-v0"
WALL_CLOCK = {"seconds", "wall_time_s", "updates_per_s"}
COMMON = {"env_id": SOKOBAN, "num_envs": 2, "eval_episodes": 1, "device": "cpu"}
DT = {
    "n_layer": 1,
    "n_embd": 16,
    "context_len": 4,
    "n_bins": 8,
    "batch_size": 8,
    "warmup_steps": 2,
    "log_every": 2,
    "checkpoint_every": 2,
    "updates": 6,
    "fidelity_targets": 0,
}
RL = {"total_timesteps": 384, "eval_every": 128}
PPO_ROLLOUT = {"n_steps": 32, "batch_size": 32}

# kind -> the config of a tiny run of it (given the demonstrations' path)
KINDS: dict[str, Callable[[str], BaseModel]] = {
    "dt": lambda data: OfflineConfig(dataset=data, **COMMON, **DT),
    "odt": lambda data: OnlineConfig(
        dataset=data,
        **COMMON,
        offline={k: v for k, v in DT.items() if k != "fidelity_targets"},
        online={
            "rounds": 4,
            "episodes_per_round": 2,
            "updates_per_round": 3,
            "batch_size": 8,
            "checkpoint_every": 1,
            "probe_segments": 8,
            "max_kl_per_round": 0.05,
            "kl_check_every": 2,
        },
    ),
    "sb3_ppo": lambda data: SB3Config(algo="ppo", hyperparams=PPO_ROLLOUT, **COMMON, **RL),
    "sb3_dqn": lambda data: SB3Config(
        algo="dqn",
        hyperparams={"learning_starts": 50, "train_freq": 3, "buffer_size": 1000},
        **COMMON,
        **RL,
    ),
    "bc": lambda data: BCConfig(
        dataset=data, updates=6, eval_every_updates=2, batch_size=16, **COMMON
    ),
    "kl_ppo_mlp": lambda data: KLPPOConfig(
        dataset=data,
        policy="mlp",
        pretrain={"updates": 4, "eval_episodes": 0},
        **PPO_ROLLOUT,
        **COMMON,
        **RL,
    ),
    "kl_ppo_dt": lambda data: KLPPOConfig(
        dataset=data,
        policy="dt",
        pretrain={**DT, "eval_episodes": 0},
        **PPO_ROLLOUT,
        **COMMON,
        **RL,
    ),
    "best_of_n": lambda data: BestOfNConfig(
        dataset=data, policy="mlp", pretrain={"updates": 4, "eval_episodes": 0}, n=2, **COMMON
    ),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "sokoban"
    return str(write_dataset(collect(SOKOBAN, 6, epsilon=0.2, seed=0), out, env_id=SOKOBAN))


def stop_after_previous_checkpoint(run_dir: Path) -> None:
    """Make a finished run look killed after its next-to-last checkpoint: that one is the
    latest again, the rows written after it stay (the resume must cut them), the last row
    is half-written and the run is marked running. A run without checkpoints (best-of-n)
    keeps its rows: it must start over."""
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*"))
    if checkpoints:
        assert len(checkpoints) == 2, "the run must checkpoint more than once"
        shutil.rmtree(checkpoints[-1])
        (run_dir / "checkpoints" / "LATEST").write_text(checkpoints[-2].name + "\n")
    with (run_dir / "episodes.csv").open("a") as handle:
        handle.write("train,sampled,9,9,9,1.5")  # torn: no line end
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": "running"}))


def rows(path: Path) -> list[dict[str, str]]:
    """A log's rows without its wall-clock columns."""
    with path.open(newline="") as handle:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(handle)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_run_stopped_after_a_checkpoint_resumes_to_the_same_rows(
    kind, dataset, tmp_path, monkeypatch, capsys
):
    config = KINDS[kind](dataset)
    _, run = registry.get(config.kind).load()
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run(config, whole)
    run(config, stopped)
    stop_after_previous_checkpoint(stopped)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the run records what it needs: any directory will do

    code, _, err = run_ogm(capsys, "resume", str(stopped))

    assert code == 0, err
    assert (stopped / "episodes.csv").read_bytes() == (whole / "episodes.csv").read_bytes()
    assert rows(stopped / "rounds.csv") == rows(whole / "rounds.csv")
    for log in ("episodes.csv", "rounds.csv"):
        assert b"\r" not in (stopped / log).read_bytes(), f"{log}: one line ending"
    assert json.loads((stopped / "run.json").read_text())["status"] == "done"
