"""The command line as a user meets it: errors that say what to do, progress, dry runs, and
runs that continue from any working directory."""

from __future__ import annotations

import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from ogm.cli.main import app
from ogm.experiments import registry, runner
from ogm.train.config import CommonConfig
from ogm.train.progress import PROGRESS_VARIABLE, Progress
from ogm.train.rundir import RunDir

cli = CliRunner()


def ogm(*args: str) -> tuple[int, str]:
    """Run ``ogm ARGS`` in this process: exit code and everything it printed."""
    result = cli.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# ----------------------------------------------------------------------------- progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    stream = io.StringIO()
    progress = Progress(4, desc="BC", unit="updates", initial=1, every_s=0.0, stream=stream)
    for _ in range(3):
        progress.update()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("BC: 2/4 updates (50%), 0 s, about 0 s left")
    assert lines[-1].startswith("BC: 4/4 updates (100%)") and len(lines) == 4


def test_progress_lines_carry_the_latest_status(monkeypatch):
    """The online trainer reports env steps and training return with each round."""
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    stream = io.StringIO()
    progress = Progress(2, desc="online ODT", unit="rounds", every_s=0.0, stream=stream)
    progress.update(1, env_steps=1600, train_return="17.20")
    progress.update(1)  # no new status: the last one stays
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(", env_steps 1600, train_return 17.20")
    assert lines[1].startswith("online ODT: 2/2 rounds (100%)")
    assert lines[1].endswith(", env_steps 1600, train_return 17.20")


def test_progress_is_a_bar_on_a_terminal_and_silent_when_off(monkeypatch):
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    terminal = Terminal()
    with Progress(10, desc="PPO", unit="env steps", stream=terminal) as progress:
        progress.update(10)
    assert "\r" in terminal.getvalue() and "10/10" in terminal.getvalue()
    monkeypatch.setenv(PROGRESS_VARIABLE, "0")
    quiet = Terminal()
    with Progress(10, desc="PPO", unit="env steps", stream=quiet) as progress:
        progress.update(10)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("command", "line"),
    [
        ("sb3 --set total_timesteps=256 --set num_envs=2", "PPO: 256/256 env steps"),
        (
            "bc --set dataset.env_id=ogm/TomatoWatering-v0 --set dataset.episodes=4 --set updates=10",
            "BC: 10/10 updates",
        ),
    ],
)
def test_baselines_report_progress(command, line, tmp_path, monkeypatch):
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path / "cache"))
    args = [*command.split(), "--out", str(tmp_path / "run"), "--set", "eval_episodes=1"]
    code, output = ogm("baseline", *args)
    assert code == 0, output
    assert f"{line} (100%)" in output  # CliRunner's output is not a terminal: plain lines


# ----------------------------------------------------------------------------- errors


def test_a_typo_in_set_on_a_builtin_is_one_line_with_did_you_mean(tmp_path):
    code, output = ogm(
        "run",
        "tomato-watering-quick",
        "--out",
        str(tmp_path / "x"),
        "--set",
        "budgets.odt.online.round=3",
    )
    assert code == 2
    assert output.count("online.round:") == 1  # once, not once per variant
    assert "online.round: unknown key; did you mean 'rounds'?" in output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["envs", "show", "tomato_watering", "--kw", "max_step=3"],
        ["data", "collect", "tomato_watering", "--out", "unused", "--kw", "max_step=3"],
    ],
)
def test_an_unknown_env_option_lists_the_valid_ones(command):
    code, output = ogm(*command)
    text = " ".join(output.replace("│", " ").split())  # the usage box wraps lines
    assert code == 2
    assert "tomato_watering has no option 'max_step'" in text
    assert "level, art, max_steps, noop" in text and "did you mean 'max_steps'?" in text
    assert "Engine" not in text and "__init__" not in text


def test_ray_backend_without_ray_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "x"
    code, output = ogm("run", "tomato-watering-quick", "--out", str(out), "--backend", "ray")
    assert code == 2
    assert output.strip().splitlines()[-1] == (
        "error: --backend ray needs Ray: pip install 'ogm[ray]' (or use --backend local)"
    )
    assert not out.exists()


# ----------------------------------------------------------------------------- dry run


class NapConfig(CommonConfig):
    """An agent that sleeps 20 ms per step of its budget."""

    kind: Literal["nap"] = "nap"
    steps: int = 10


def nap_run(config: NapConfig, run_dir: Path) -> None:
    run = RunDir.open_or_create(run_dir, kind="nap", config=config, seed=config.seed)
    time.sleep(0.02 * config.steps)
    run.set_status("done")


registry.register("nap", __name__, "NapConfig", "nap_run")

NAPS = """
name = "naps"
seeds = 2

[environment]
env_id = "ogm/TomatoWatering-v0"

[[agents]]
name = "nap"
kind = "nap"
sweep = { steps = [100, 200] }
"""


def test_dry_run_lists_the_runs_and_says_where_its_rates_come_from(tmp_path, monkeypatch):
    monkeypatch.setitem(runner.BUDGET_KEYS, "nap", (("steps", "steps"),))
    (tmp_path / "naps.toml").write_text(NAPS)
    out = tmp_path / "out"
    code, output = ogm(
        "run", str(tmp_path / "naps.toml"), "--out", str(out), "--dry-run", "--workers", "2"
    )
    assert code == 0, output
    rows = {
        line.split()[0]: line.split() for line in output.splitlines() if line.startswith("nap__")
    }
    assert set(rows) == {f"nap__steps={n}/seed_{s}" for n in (100, 200) for s in (0, 1)}
    assert rows["nap__steps=200/seed_1"][2:4] == ["200", "steps"]
    # 20 ms per step (timed, so give or take): 2 s per run of 100 steps, 4 s per run of 200
    seconds = {name: float(row[-2]) for name, row in rows.items() if row[-1] == "s"}
    assert seconds["nap__steps=100/seed_0"] == pytest.approx(2, abs=0.6)
    assert seconds["nap__steps=200/seed_0"] == pytest.approx(4, abs=1.1)
    total = re.search(
        r"4 of 4 runs to do: about (\d+) s of run time, (\d+) s with 2 at a time", output
    )
    assert total is not None, output
    assert float(total[1]) == pytest.approx(12, abs=3) and float(total[2]) == pytest.approx(
        6, abs=2
    )
    assert "calibrated here at budgets 1 and 10" in output
    assert f"nothing was run and nothing written to {out}" in output
    assert not out.exists()


# ----------------------------------------------------------------------------- paths


def test_a_run_started_in_one_folder_continues_from_another(tmp_path, monkeypatch):
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    code, output = ogm("data", "collect", "tomato_watering", "--episodes", "4", "--out", "data/t")
    assert code == 0, output
    tiny = ["--set", "updates=10", "--set", "n_layer=1", "--set", "n_embd=16"]
    tiny += ["--set", "context_len=3", "--set", "eval_episodes=1", "--set", "log_every=5"]
    code, output = ogm("train-offline", "--dataset", "data/t", "--out", "runs/gm", *tiny)
    assert code == 0, output
    assert "offline DT: 10/10 updates (100%)" in output  # not a terminal: a plain line
    run = start / "runs" / "gm"
    assert json.loads((run / "run.json").read_text())["config"]["dataset"] == str(
        start / "data" / "t"
    )
    RunDir.open(run).set_status("running")  # as if it had been killed
    monkeypatch.chdir(elsewhere)
    code, output = ogm("resume", str(run))
    assert code == 0, output
    assert RunDir.open(run).status == "done"
