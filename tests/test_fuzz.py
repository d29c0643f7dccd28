"""Bad input of every kind ends one way: exit code 2, one line naming the file or field, no
traceback, nothing left behind.

A table holds the known cases (configs, ``--set``, TOML files, datasets, checkpoints, ASCII
art, the command line, a full disk, a read-only run directory); property tests throw
random input at the same doors (config values, ``--set`` text, art, dataset contents,
checkpoint state, command lines) and ask that it is either accepted or refused so.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrypoint import run_ogm
from ogm.baselines.bc import BCConfig
from ogm.baselines.best_of_n import BestOfNConfig
from ogm.baselines.kl_ppo import KLPPOConfig
from ogm.baselines.sb3 import SB3Config
from ogm.baselines.sb3 import run as sb3_run
from ogm.data import DatasetError, collect, load_trajectories, write_dataset
from ogm.data.dataset import check_trajectories
from ogm.envs import GAMES, GridworldVectorEnv, check_env
from ogm.experiments.spec import ExperimentError, load_experiment
from ogm.train import offline
from ogm.train.config import ConfigError, load_config, validate_config
from ogm.train.offline import OfflineConfig
from ogm.train.online import OnlineConfig
from ogm.train.rundir import RunDir, RunDirError, TensorBoard, load_checkpoint

SOKOBAN = "ogm/SideEffectsSokoban-v0"
TINY_DT = [
    "device='cpu'",
    "num_envs=1",
    "eval_episodes=1",
    "n_layer=1",
    "n_embd=8",
    "context_len=3",
    "n_bins=4",
    "batch_size=4",
    "updates=4",
    "checkpoint_every=2",
    "log_every=2",
    "fidelity_targets=0",
]


def fuzz(examples: int) -> settings:
    """Hypothesis settings: ``examples`` inputs, no deadline (a run may build a model)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


_examples = itertools.count()


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch):
    """Progress lines of runs that start and then fail are not what these tests count."""
    monkeypatch.setenv("OGM_PROGRESS", "0")


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "sokoban"
    return write_dataset(collect(SOKOBAN, 3, epsilon=0.2, seed=0), out, env_id=SOKOBAN)


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory) -> Path:
    """A tiny GM run with checkpoints at updates 2 and 4."""
    path = tmp_path_factory.mktemp("runs") / "dt"
    config = load_config(OfflineConfig, None, [*TINY_DT, f"env_id='{SOKOBAN}'"])
    offline.run(config.model_copy(update={"dataset": str(dataset)}), path)
    return path


def refused(capsys, *args: str, names: str, out: Path | None = None) -> str:
    """Run ``ogm *args``; check the one-way failure and return the error line."""
    code, stdout, err = run_ogm(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, (args, stdout, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert "Traceback" not in stdout + err
    assert names in lines[0], (args, lines[0])
    if out is not None:
        assert not out.exists(), f"{args} left {out} behind"
    return lines[0]


# ----------------------------------------------------------------------------- table: configs

CONFIG_CASES = [
    # (command, overrides, what the message must name)
    ("train-offline", ["n_layer=99999999999999999999"], "n_layer"),
    ("train-offline", ["n_embd=100000"], "n_embd"),
    ("train-offline", ["n_embd=30", "n_head=4"], "n_head"),
    ("train-offline", ["n_layer=64", "n_embd=8192"], "n_layer"),
    ("train-offline", ["context_len=5000"], "context_len"),
    ("train-offline", ["updates=1e12"], "updates"),
    ("train-offline", ["batch_size=10000000"], "batch_size"),
    ("train-offline", ["batch_size=65536", "context_len=1024"], "batch_size"),
    ("train-offline", ["max_ep_len=99999999999"], "max_ep_len"),
    ("train-offline", ["learning_rate=inf"], "learning_rate"),
    ("train-offline", ["return_range=[0, inf]"], "return_range"),
    ("train-offline", ["return_range=[-1e300, 1e300]"], "return_range"),
    ("train-offline", ["reward_scale=nan"], "reward_scale"),
    ("train-offline", ["strategy='fixed:nan'"], "strategy"),
    ("train-offline", ["strategy='exp_tilted:1e308'"], "strategy"),
    ("train-offline", ["seed=4294967296"], "seed"),
    ("train-offline", ["seed=-1"], "seed"),
    ("train-offline", ["num_envs=5000"], "num_envs"),
    ("train-offline", ["eval_episodes=1e9"], "eval_episodes"),
    ("train-offline", ["eval_every=1e30"], "eval_every"),
    ("train-offline", ["env_kwargs.colour='red'"], "colour"),
    ("train-offline", ["env_kwargs.max_steps=10000000"], "max_steps"),
    ("train-offline", ["env_kwargs.level=99"], "level"),
    ("train-offline", ["env_id='ogm/NoSuchGame-v0'"], "env_id"),
    ("train-offline", ["bogus=1"], "bogus"),
    ("train", ["online.rounds=99999999999"], "online.rounds"),
    ("train", ["online.buffer_capacity=1e15"], "online.buffer_capacity"),
    ("train", ["online.batch_size=-1"], "online.batch_size"),
    ("train", ["online.strategy='fixed:inf'"], "online.strategy"),
    ("train", ["online.kl_backtracks=1000"], "online.kl_backtracks"),
    ("train", ["offline.n_embd=30", "offline.n_head=4"], "offline"),
    ("baseline sb3", ["hyperparams.n_steps=-1"], "hyperparams"),
    ("baseline sb3", ["hyperparams.learning_rate='fast'"], "hyperparams"),
    ("baseline sb3", ["hyperparams.seed=3"], "hyperparams"),
    ("baseline sb3", ["algo='dqn'", "hyperparams.buffer_size=1e12"], "buffer_size"),
    ("baseline sb3", ["hyperparams.n_steps=60000", "num_envs=4000"], "n_steps"),
    ("baseline sb3", ["hyperparams.gamma=nan"], "gamma"),
    ("baseline sb3", ["total_timesteps=1e30"], "total_timesteps"),
    ("baseline sb3", ["net_arch=[64, 100000]"], "net_arch"),
    ("baseline bc", ["updates=-1"], "updates"),
    ("baseline kl-ppo", ["n_steps=99999999"], "n_steps"),
    ("baseline kl-ppo", ["pretrain.n_layer=1000"], "pretrain.n_layer"),
    ("baseline kl-ppo", ["critic_arch=[0]"], "critic_arch"),
    ("baseline best-of-n", ["n=100000"], "n"),
]
if not torch.cuda.is_available():
    CONFIG_CASES.append(("train-offline", ["device='cuda'"], "device"))


@pytest.mark.parametrize(("command", "overrides", "names"), CONFIG_CASES)
def test_bad_config_values_are_refused(command, overrides, names, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    where = (
        ["--dataset", str(dataset)]
        if command in ("train-offline", "train")
        else sets(f"dataset='{dataset}'")
    )
    args = [*command.split(), "--out", str(out), *where, *sets(f"env_id='{SOKOBAN}'")]
    refused(capsys, *args, *sets(*TINY_DT[:3], *overrides), names=names, out=out)


def test_bad_config_files_are_refused_naming_the_file(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    huge = tmp_path / "huge.toml"
    huge.write_text("n_layer = 99999999999999999999\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("n_layer = [1,\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xf5\xf6 = 1\n")
    for file, names in ((huge, "n_layer"), (broken, "broken.toml"), (binary, "binary.toml")):
        args = ["train-offline", "--dataset", str(dataset), "--out", str(out)]
        line = refused(capsys, *args, "--config", str(file), names=names, out=out)
        assert file.name in line
    refused(
        capsys, "train-offline", "--config", str(tmp_path), "--out", str(out), names=str(tmp_path)
    )


def test_paths_to_start_from_must_be_run_directories(dataset, finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    a_file = Path(dataset) / "data" / "metadata.json"
    args = ["train-online", "--pretrained", str(a_file), "--out", str(out)]
    refused(capsys, *args, *sets(f"dataset='{dataset}'"), names="pretrained", out=out)
    args = ["baseline", "kl-ppo", "--out", str(out), *sets(f"init='{a_file}'")]
    refused(capsys, *args, names="init", out=out)
    args = ["baseline", "kl-ppo", "--out", str(out), *sets(f"init='{tmp_path}'", "policy='mlp'")]
    refused(capsys, *args, names=str(tmp_path), out=out)
    refused(capsys, "train-offline", "--out", str(out), *sets(*TINY_DT), names="dataset", out=out)


def test_an_unknown_primary_event_is_refused(tmp_path):
    file = tmp_path / "exp.toml"
    file.write_text(
        'name = "x"\nseeds = 1\nprimary_event = "nope"\n[environment]\n'
        f'env_id = "{SOKOBAN}"\n[[agents]]\nname = "ppo"\nkind = "sb3"\n'
    )
    with pytest.raises(ExperimentError, match=r"primary_event: .* no event 'nope'; its events"):
        load_experiment(str(file))


# ----------------------------------------------------------------------------- table: data


def _rewrite(path: Path, key: str, change) -> None:
    with h5py.File(path / "data" / "main_data.hdf5", "a") as file:
        group = file["episode_0"]
        old = group[key][()]
        del group[key]
        group.create_dataset(key, data=change(old))


def _set_metadata(path: Path, **values: Any) -> None:
    meta = path / "data" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **values}))


DATASET_CASES = {
    "nan_observations": lambda d: _rewrite(d, "observations", lambda o: o * np.float32("nan")),
    "float_actions": lambda d: _rewrite(d, "actions", lambda a: a + 0.5),
    "actions_outside": lambda d: _rewrite(d, "actions", lambda a: a + 7),
    "inf_rewards": lambda d: _rewrite(d, "rewards", lambda r: r + np.inf),
    "no_episodes": lambda d: _set_metadata(d, total_episodes=0),
    "episodes_not_a_count": lambda d: _set_metadata(d, total_episodes="many"),
    "binary_metadata": lambda d: (d / "data" / "metadata.json").write_bytes(b"\xf5\x00"),
    "truncated": lambda d: (d / "data" / "main_data.hdf5").write_bytes(
        (d / "data" / "main_data.hdf5").read_bytes()[:4000]
    ),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_datasets_are_refused_naming_the_file(case, dataset, tmp_path, capsys):
    bad = tmp_path / case
    shutil.copytree(dataset, bad)
    DATASET_CASES[case](bad)
    refused(capsys, "data", "info", str(bad), names=str(bad))
    out = tmp_path / "out"
    args = ["train-offline", "--dataset", str(bad), "--out", str(out), *sets(*TINY_DT)]
    refused(capsys, *args, names=str(bad), out=out)


def test_a_dataset_of_another_game_is_refused(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["train-offline", "--dataset", str(dataset), "--out", str(out)]
    args += sets(*TINY_DT, "env_id='ogm/BoatRace-v0'", "env_kwargs={}")
    line = refused(capsys, *args, names=str(dataset), out=out)
    assert "ogm/BoatRace-v0" in line


# ----------------------------------------------------------------------------- table: runs


def _state(checkpoint: Path, change) -> None:
    file = checkpoint / "state.json"
    payload = json.loads(file.read_text())
    change(payload["state"])
    file.write_text(json.dumps(payload))


def _copy_other_run(run: Path, checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    """Replace the checkpoint by one of another run (another model size)."""
    other = tmp_path / "other"
    config = load_config(OfflineConfig, None, [*TINY_DT, f"env_id='{SOKOBAN}'", "n_embd=16"])
    offline.run(config.model_copy(update={"dataset": str(dataset)}), other)
    shutil.rmtree(checkpoint)
    shutil.copytree(sorted((other / "checkpoints").glob("step_*"))[-1], checkpoint)


RUN_CASES = {
    "state_lacks_a_key": (lambda r, c: _state(c, lambda s: s.pop("optimizer")), "optimizer"),
    "state_list_for_a_dict": (
        lambda r, c: _state(c, lambda s: s.update(numpy_rng=[1, 2])),
        "step_",
    ),
    "state_wrong_type": (lambda r, c: _state(c, lambda s: s.update(_log_rows="x")), "step_"),
    "state_not_an_object": (lambda r, c: (c / "state.json").write_text("[1, 2]"), "state.json"),
    "state_binary": (lambda r, c: (c / "state.json").write_bytes(b"\xf5\xff"), "state.json"),
    "state_missing": (lambda r, c: (c / "state.json").unlink(), "state.json"),
    "tensors_truncated": (
        lambda r, c: (c / "tensors.safetensors").write_bytes(b"\x10\x00"),
        "tensors.safetensors",
    ),
    "tensor_missing": (
        lambda r, c: _drop_tensor(c, "model.action_head.bias"),
        "action_head.bias",
    ),
    "arrays_truncated": (
        lambda r, c: (c / "arrays.npz").write_bytes((c / "arrays.npz").read_bytes()[:10]),
        "arrays.npz",
    ),
    "run_json_is_5": (lambda r, c: (r / "run.json").write_text("5"), "run.json"),
    "run_json_config_huge": (
        lambda r, c: _record(r, lambda rec: rec["config"].update(n_layer=10**20)),
        "n_layer",
    ),
    "latest_into_another_run": (
        lambda r, c: (r / "checkpoints" / "LATEST").write_text("../../other/checkpoints/x\n"),
        "LATEST",
    ),
    "latest_binary": (lambda r, c: (r / "checkpoints" / "LATEST").write_bytes(b"\xff"), "LATEST"),
    "episodes_csv_binary": (lambda r, c: (r / "episodes.csv").write_bytes(b"\xff\xfe"), "episodes"),
    "rounds_csv_lost_rows": (
        lambda r, c: (r / "rounds.csv").write_text((r / "rounds.csv").read_text().split("\n")[0]),
        "the log lost rows",
    ),
}


def _drop_tensor(checkpoint: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "tensors.safetensors")
    del tensors[name]
    save_file(tensors, checkpoint / "tensors.safetensors")


def _record(run: Path, change) -> None:
    record = json.loads((run / "run.json").read_text())
    change(record)
    (run / "run.json").write_text(json.dumps(record))


@pytest.mark.parametrize("case", [*sorted(RUN_CASES), "checkpoint_of_another_model"])
def test_damaged_or_foreign_checkpoints_are_refused(case, finished_run, dataset, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _record(run, lambda rec: rec.update(status="running"))
    checkpoint = run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip()
    if case == "checkpoint_of_another_model":
        _copy_other_run(run, checkpoint, dataset, tmp_path)
        names = "was not written by the run"
    else:
        damage, names = RUN_CASES[case]
        damage(run, checkpoint)
    line = refused(capsys, "resume", str(run), names=names)
    assert str(run) in line
    assert not list(run.rglob(".*")), "temporary files left behind"


def _arrays(checkpoint: Path, change) -> None:
    with np.load(checkpoint / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(checkpoint / "arrays.npz", **arrays)


SB3_CASES = {
    "counters_lacking": (lambda c: _state(c, lambda s: s["sb3"].pop("num_timesteps")), "lacks"),
    "episodes_under_way_of_another_shape": (
        lambda c: _arrays(c, lambda a: a.update({"env/cells": a["env/cells"][:1]})),
        "cannot be restored",
    ),
    "partial_episode_torn": (
        lambda c: _arrays(c, lambda a: a.update({"episodes/0/rewards": a["obs"][:0, 0, 0, 0]})),
        "cannot be restored",
    ),
    "replay_position_lacking": (
        lambda c: _arrays(c, lambda a: a.pop("replay/pos")),
        "arrays.npz lacks 'replay/pos'",
    ),
}


@pytest.fixture(scope="module")
def finished_dqn_run(tmp_path_factory) -> Path:
    """A tiny DQN run: its checkpoints hold a replay buffer and the episodes under way."""
    path = tmp_path_factory.mktemp("runs") / "dqn"
    config = SB3Config(
        env_id=SOKOBAN,
        algo="dqn",
        num_envs=2,
        eval_episodes=1,
        eval_every=64,
        total_timesteps=128,
        device="cpu",
        hyperparams={"learning_starts": 20, "buffer_size": 500},
    )
    sb3_run(config, path)
    return path


@pytest.mark.parametrize("case", sorted(SB3_CASES))
def test_damaged_sb3_checkpoints_are_refused(case, finished_dqn_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_dqn_run, run)
    _record(run, lambda rec: rec.update(status="running"))
    damage, names = SB3_CASES[case]
    damage(run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip())
    assert str(run) in refused(capsys, "resume", str(run), names=names)


# ----------------------------------------------------------------------------- table: art

ART_CASES = [
    ('["#####", "#A  #", "###"]', "ragged"),
    ('["#####", "#A ?#", "#####"]', "unknown character"),
    ('["#####", "#   #", "#####"]', "no agent"),
    ('["#####", "#AA #", "#####"]', "second agent"),
    ("[]", "art"),
    ("5", "art"),
    (json.dumps(["A" + " " * 200] * 60), "larger than"),
]


@pytest.mark.parametrize(("art", "names"), ART_CASES)
def test_bad_art_is_refused(art, names, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "baseline",
        "sb3",
        "--out",
        str(out),
        *sets(f"env_id='{SOKOBAN}'", f"env_kwargs.art={art}"),
    ]
    line = refused(capsys, *args, names=names, out=out)
    assert "env_kwargs" in line
    refused(capsys, "envs", "show", "side_effects_sokoban", "--kw", f"art={art}", names=names)


# ----------------------------------------------------------------------------- table: CLI


def test_bad_command_lines_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["data", "collect", "boat_race", "--out", str(out), "--episodes", "1e23"], "--episodes"),
        (["data", "collect", "boat_race", "--out", str(out), "--seed", "-1"], "seed"),
        (["data", "collect", "boat_race", "--out", str(out), "--episodes", "1e11"], "--episodes"),
        (["data", "collect", "boat_race", "--out", str(out), "--kw", "colour=red"], "colour"),
        (["data", "info", str(tmp_path / "missing")], "missing"),
        (["envs", "show", "ogm/Nope-v0"], "Nope"),
        (["resume", str(tmp_path / "missing")], "missing"),
        (["run", str(tmp_path / "missing.toml"), "--out", str(out)], "missing"),
        (["--threads", "0", "envs", "list"], "--threads"),
        (["train-offline", "--out", str(out), "--nonsense"], "--nonsense"),
    ]
    for args, names in cases:
        refused(capsys, *args, names=names, out=out)


def test_ogm_debug_shows_the_traceback_also_of_errors_a_command_catches(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("OGM_DEBUG", "1")
    code, _, err = run_ogm(capsys, "resume", str(tmp_path / "missing"))
    assert code == 2 and "Traceback" in err and "RunDirError" in err


# ----------------------------------------------------------------------------- full disk


def test_collect_on_a_full_disk_ends_in_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "data" / "boat"
    full = type("Usage", (), {"free": 4096})()
    monkeypatch.setattr("ogm.data.dataset.shutil.disk_usage", lambda path: full)
    args = ["data", "collect", "boat_race", "--out", str(out), "--episodes", "3"]
    line = refused(capsys, *args, names=str(out.parent), out=out)
    assert "No space left on device" in line
    assert list(out.parent.iterdir()) == []


def test_a_dataset_write_that_fails_half_way_leaves_no_staging_folder(
    tmp_path, capsys, monkeypatch
):
    import minari

    def fill_then_fail(**kwargs):
        root = Path(__import__("os").environ["MINARI_DATASETS_PATH"])
        (root / kwargs["dataset_id"] / "data").mkdir(parents=True)
        (root / kwargs["dataset_id"] / "data" / "main_data.hdf5").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", fill_then_fail)
    out = tmp_path / "data" / "boat"
    args = ["data", "collect", "boat_race", "--out", str(out), "--episodes", "2"]
    refused(capsys, *args, names="No space left", out=out)
    assert list(out.parent.iterdir()) == []


def test_a_checkpoint_on_a_full_disk_ends_the_run_in_one_line_keeping_the_last_good_one(
    dataset, tmp_path, capsys, monkeypatch
):
    saves = itertools.count()
    real_savez = np.savez

    def savez_until_full(file, **arrays):
        if next(saves) >= 1:  # the second checkpoint finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(file, **arrays)

    monkeypatch.setattr("ogm.train.rundir.np.savez", savez_until_full)
    out = tmp_path / "run"
    args = ["train-offline", "--dataset", str(dataset), "--out", str(out), *sets(*TINY_DT)]
    line = refused(capsys, *args, names="arrays.npz")
    assert "No space left on device" in line
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_000000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LATEST", "step_000000002"]
    assert RunDir.open(out).status == "failed"


def test_tensorboard_on_a_directory_it_cannot_write_warns_in_one_line_without_traceback(
    tmp_path, capfd, monkeypatch
):
    from tensorboard.summary.writer.record_writer import RecordWriter

    not_a_directory = tmp_path / "tb"
    not_a_directory.write_text("")
    writer = TensorBoard(not_a_directory)
    writer.add_scalar("a", 1.0, 0)
    writer.close()
    # a disk that fills while TensorBoard's own thread writes
    writer = TensorBoard(tmp_path / "tb2")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    for step in range(3):
        writer.add_scalar("a", 1.0, step)
    writer.flush()
    time.sleep(0.2)
    writer.add_scalar("a", 1.0, 9)
    writer.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        "warning: TensorBoard events stop here"
    ] * 2
    assert threading.excepthook.quiets_tensorboard  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- diverging


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(
    dataset, tmp_path, capsys, monkeypatch
):
    calls = itertools.count()
    real_loss = offline.dt_loss

    def loss_that_turns_nan(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        return (loss * math.nan if next(calls) >= 3 else loss), stats

    monkeypatch.setattr(offline, "dt_loss", loss_that_turns_nan)
    out = tmp_path / "run"
    args = ["train-offline", "--dataset", str(dataset), "--out", str(out), *sets(*TINY_DT)]
    line = refused(capsys, *args, names="learning rate")
    assert "loss is nan" in line
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_000000002"
    assert "diverged" in RunDir.open(out).record["error"]


def test_a_learning_rate_that_diverges_is_caught_in_every_trainer(dataset, tmp_path, capsys):
    common = [f"dataset='{dataset}'", f"env_id='{SOKOBAN}'", *TINY_DT[:3]]
    for command, overrides in (
        (["train-offline"], [*TINY_DT, "learning_rate=1e30", "warmup_steps=0"]),
        (
            ["baseline", "kl-ppo"],
            [
                "policy='mlp'",
                "learning_rate=1e30",
                "critic_learning_rate=1e30",
                "n_steps=16",
                "batch_size=16",
                "total_timesteps=64",
                "pretrain={updates=2, eval_episodes=0}",
            ],
        ),
    ):
        out = tmp_path / command[-1]
        line = refused(
            capsys, *command, "--out", str(out), *sets(*common, *overrides), names="diverged"
        )
        assert "learning rate" in line


# ----------------------------------------------------------------------------- properties

WEIRD = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=3),
    st.dictionaries(
        st.sampled_from(["level", "art", "max_steps", "x"]), st.integers(-3, 3), max_size=2
    ),
)
CONFIGS = (OfflineConfig, OnlineConfig, SB3Config, BCConfig, KLPPOConfig, BestOfNConfig)


def _one_line_naming(err: ConfigError, keys: list[str]) -> None:
    message = str(err)
    assert "\n" not in message
    assert any(key in message for key in keys), (keys, message)


# tables of a config whose own keys are known: the values drawn for them are such tables
TABLES = {
    "online": OnlineConfig.model_fields["online"].annotation.model_fields,
    "offline": OfflineConfig.model_fields,
    "pretrain": OfflineConfig.model_fields,
    "hyperparams": dict.fromkeys(["n_steps", "batch_size", "learning_rate", "gamma", "seed"]),
    "dataset": dict.fromkeys(["env_id", "episodes", "epsilon", "skill", "seed"]),
}


@fuzz(50)
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_any_config_values_are_accepted_or_refused_naming_a_field(cls, data):
    def draw(key: str) -> Any:
        if key in TABLES and data.draw(st.booleans()):
            inner = data.draw(st.lists(st.sampled_from(sorted(TABLES[key])), max_size=3))
            return {k: data.draw(WEIRD, label=f"{key}.{k}") for k in inner}
        return data.draw(WEIRD, label=key)

    fields = sorted(set(cls.model_fields) - {"kind"})
    keys = data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True))
    try:
        validate_config(cls, {"env_id": SOKOBAN, **{key: draw(key) for key in keys}})
    except ConfigError as err:
        _one_line_naming(err, keys)


@fuzz(50)
@given(key=st.text(max_size=12), value=st.text(max_size=12))
def test_any_set_override_is_accepted_or_refused(key, value):
    try:
        load_config(OfflineConfig, None, [f"{key}={value}", f"env_id='{SOKOBAN}'"])
    except ConfigError as err:
        assert "\n" not in str(err)


@fuzz(50)
@given(game=st.sampled_from(sorted(GAMES)), data=st.data())
def test_any_art_builds_a_level_that_steps_or_is_refused(game, data):
    engine = GAMES[game].engine
    chars = st.sampled_from(engine.chars + "".join(engine.aliases) + "?\t")
    width = data.draw(st.integers(0, 7))
    rows = data.draw(st.lists(st.text(chars, min_size=width, max_size=width), max_size=6))
    try:
        check_env(GAMES[game].env_id, {"art": rows})
    except ValueError as err:
        assert "\n" not in str(err)
        return
    env = GridworldVectorEnv(game, 3, art=rows)
    env.reset(seed=0)
    actions = data.draw(
        st.lists(st.integers(0, env.single_action_space.n - 1), min_size=3, max_size=3)
    )
    for _ in range(20):
        env.step(np.asarray(actions))


@fuzz(20)
@given(
    key=st.sampled_from(["observations", "actions", "rewards", "terminations"]),
    dtype=st.sampled_from(["float32", "float64", "int64", "uint8", "bool"]),
    fill=st.sampled_from([0, 1, -1, 7, 0.5, math.nan, math.inf]),
    cut=st.booleans(),
)
def test_any_dataset_contents_load_checked_or_are_refused_naming_the_file(
    dataset, tmp_path_factory, key, dtype, fill, cut
):
    path = tmp_path_factory.mktemp("ds") / f"d{next(_examples)}"
    shutil.copytree(dataset, path)

    def change(old: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            new = np.full(old.shape, fill, dtype=np.float64).astype(dtype)
        return new[:-1] if cut else new

    _rewrite(path, key, change)
    try:
        trajectories = load_trajectories(path)
    except DatasetError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    env = GridworldVectorEnv("side_effects_sokoban", 1)
    check_trajectories(trajectories, env.single_observation_space, env.single_action_space)


JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(), st.text(max_size=4)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


@fuzz(30)
@given(data=st.data())
def test_any_checkpoint_state_restores_or_is_refused_naming_the_checkpoint(
    finished_run, dataset, tmp_path_factory, data
):
    run = tmp_path_factory.mktemp("run") / "r"
    shutil.copytree(finished_run, run)
    checkpoint = load_checkpoint(run)
    payload = json.loads((checkpoint.path / "state.json").read_text())
    node, path = payload, []
    while isinstance(node, dict) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node)))
        node, path = node[key], [*path, key]
    if path:
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    (checkpoint.path / "state.json").write_text(json.dumps(payload))
    config = validate_config(OfflineConfig, RunDir.open(run).config)
    trajectories = load_trajectories(dataset)
    model = offline.build_model(
        config, trajectories, GridworldVectorEnv("side_effects_sokoban", 1).single_action_space
    )
    optimizer, scheduler = offline.make_optimizer(model, 1e-3, 0.0, 1)
    try:
        restored = RunDir.open(run).resume()
        offline.restore(restored, model, optimizer, scheduler, np.random.default_rng())
    except RunDirError as err:
        assert "\n" not in str(err) and str(run) in str(err)


# never a command that would run for long: no dataset to train on, no collect, no sb3
COMMANDS = ["data", "info", "envs", "show", "list", "resume", "train-offline", "baseline", "bc"]
OPTIONS = ["--set", "--config", "--out", "--kw", "--json", "--episodes", "--seed", "--actions"]
VALUES = ["boat_race", "x=1", "n_layer=1e40", "seed=-1", "1e23", "-1", "uuddlr", "", "\x00", "é"]
TOKENS = st.sampled_from([*COMMANDS, *OPTIONS, *VALUES])


@fuzz(60)
@given(argv=st.lists(TOKENS, max_size=6), where=st.sampled_from(["missing", "file", "dir"]))
def test_any_command_line_succeeds_or_ends_in_one_line(argv, where, tmp_path_factory, capsys):
    root = tmp_path_factory.mktemp("cli")
    place = {"missing": root / "missing", "file": root / "file.toml", "dir": root}[where]
    if where == "file":
        place.write_bytes(b"\xf5 = [")
    argv = [str(place) if token == "" else token for token in argv]
    before = sorted(root.rglob("*"))
    code, out, err = run_ogm(capsys, *argv)
    assert "Traceback" not in out + err
    if code != 0 and "Usage:" not in out:  # a group alone shows its help, also exit 2
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(root.rglob("*")) == before, "nothing written"
