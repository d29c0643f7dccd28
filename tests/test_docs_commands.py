"""Every command and TOML example in README.md and docs/*.md runs as written.

Each document's ```bash blocks run in order, in a fresh folder of their own (a document's
later commands may use what its earlier ones made, never another document's), in this
process (``ogm`` through its typer app: no interpreter start per command). Commands run at
smoke size: ``SMOKE`` appends ``--set`` overrides that shrink budgets and models (later
values win, so the documented ones are still parsed and validated), and ``data collect``
collects a few episodes. A ```toml block is saved under the file name its document runs it
by (``TOML_FILES``) and validated like any experiment file. Commands in ``SKIPPED`` are
genuinely long or need what a test machine lacks; each says why.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ogm.cli.main import app
from ogm.experiments.spec import expand, load_experiment

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# command prefix -> why it does not run here
SKIPPED = {
    "python3 -m venv": "installs packages and runs the test suite (what .ci/run does)",
    "ogm demo": "about 2 minutes; the same experiment runs at smoke size as "
    "`ogm run tomato-watering-quick` in the README's tour",
    "ogm run tomato-watering --workers": "a full built-in experiment: 22 variants even at smoke size",
    "ogm run boat-race": "a full built-in experiment: 22 variants even at smoke size",
    "ogm run side-effects --workers": "a full built-in experiment: 22 variants even at smoke size",
    "ogm run absent-supervisor --workers": "a full built-in experiment: 22 variants even at smoke size",
    "ogm run alignment-tax-mujoco --size cpu": "the Hopper reference run: about 2 hours",
    "ogm run hack-depth --set 'environment.sweep.k=[1, 2, 3, 4, 5, 6]' --workers": "the 10-seed "
    "hack-depth grid: 900 runs, about 12 hours of run time",
    "ogm run rm-overoptimisation --workers": "the 10-seed over-optimisation grid: 1,150 runs, "
    "22 hours of run time, about 11 with 2 workers",
    "ogm run my_experiment.toml --backend ray": "starts a Ray cluster",
    "ogm data info D4RL/": "needs that dataset downloaded into the local Minari root",
    "python scripts/reference_baselines.py": "about 6 minutes of PPO training",
    "pip install 'ogm[ray]'": "installs packages (CI installs the ray extra)",
    "ogm run tomato-watering-quick --backend ray": "starts a Ray cluster (tests/test_ray.py)",
    "ogm run tomato-watering --backend ray": "a full built-in experiment on a Ray cluster",
    "ogm run gpu_sweep.toml --backend ray": "needs a Ray cluster with GPUs",
    "ogm run tomato-watering-quick --out m --backend ray": "the measured Ray-vs-pool timing",
}
# files a document's commands read that one of its ```toml blocks gives
TOML_FILES = {"docs/experiments.md": "my_experiment.toml", "docs/cluster.md": "gpu_sweep.toml"}
# per agent kind: --set overrides that make a run of it small
SMOKE_BUDGETS = {
    "dt": ["n_layer=1", "n_embd=16", "context_len=3", "fidelity_targets=2", "updates=10"],
    # one round of 2 episodes; its updates follow the file's rule (a replay ratio gives a few)
    "odt": ["online.rounds=1", "online.episodes_per_round=2"],
    "sb3": ["total_timesteps=256", "num_envs=2"],
    "bc": ["updates=10", "dataset.episodes=6"],
    "kl_ppo": ["total_timesteps=64", "n_steps=16", "num_envs=2"],
    "best_of_n": ["n=2"],
}
SMOKE = {  # command -> --set overrides appended
    ("train-offline",): SMOKE_BUDGETS["dt"],
    ("train",): [
        *(f"offline.{s}" for s in SMOKE_BUDGETS["dt"]),
        *SMOKE_BUDGETS["odt"],
        "online.updates_per_round=5",
    ],
    ("train-online",): [*SMOKE_BUDGETS["odt"], "online.updates_per_round=5"],
    ("baseline", "sb3"): SMOKE_BUDGETS["sb3"],
    ("baseline", "bc"): SMOKE_BUDGETS["bc"],
    ("baseline", "kl-ppo"): SMOKE_BUDGETS["kl_ppo"],
    ("baseline", "best-of-n"): SMOKE_BUDGETS["best_of_n"],
}
COLLECT_EPISODES = "6"


def commands(document: str) -> list[tuple[int, str]]:
    """The shell commands of a document's ```bash blocks: (line, command), continuation
    lines joined, comments and blank lines left out."""
    text = (ROOT / document).read_text()
    found = []
    for block in BLOCK.finditer(text):
        if block[1] != "bash":
            continue
        first = text[: block.start(2)].count("\n") + 1
        pending, start = "", first
        for number, line in enumerate(block[2].splitlines(), first):
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = pending + line
            pending = ""
            if command.strip() and not command.strip().startswith("#"):
                found.append((start, command.strip()))
    return found


def toml_blocks(document: str) -> list[str]:
    return [b[2] for b in BLOCK.finditer((ROOT / document).read_text()) if b[1] == "toml"]


def run_overrides(experiment: str) -> list[str] | str:
    """``--set`` values that make ``ogm run EXPERIMENT`` small: one seed, and each of its
    agent kinds' ``SMOKE_BUDGETS``; or why it cannot be made small (a kind without one)."""
    spec, _ = load_experiment(experiment)
    kinds = sorted({agent.kind for agent in spec.agents})
    unknown = [kind for kind in kinds if kind not in SMOKE_BUDGETS]
    if unknown:
        return f"no smoke size known for agent kinds {unknown} (add them to SMOKE_BUDGETS)"
    values = ["seeds=1", "common.eval_episodes=1"]
    values += ["dataset.episodes=" + COLLECT_EPISODES] if spec.dataset is not None else []
    return values + [f"budgets.{kind}.{value}" for kind in kinds for value in SMOKE_BUDGETS[kind]]


def smoke(argv: list[str]) -> list[str] | str:
    """``argv`` (after ``ogm``) at smoke size, or why that cannot be done."""
    if argv[:2] == ["data", "collect"]:
        if "--episodes" in argv:
            argv = argv[:]
            argv[argv.index("--episodes") + 1] = COLLECT_EPISODES
            return argv
        return [*argv, "--episodes", COLLECT_EPISODES]
    if argv[0] == "run":
        overrides = run_overrides(argv[1])
        if isinstance(overrides, str):
            return overrides
    else:
        prefix = next((p for p in SMOKE if tuple(argv[: len(p)]) == p), None)
        overrides = [*SMOKE[prefix], "eval_episodes=1"] if prefix else []
    return [*argv, *(arg for value in overrides for arg in ("--set", value))]


def test_every_document_has_commands_and_every_skip_is_used():
    everything = [c for d in DOCUMENTS for _, c in commands(d)]
    assert len(everything) > 40
    for prefix in SKIPPED:
        assert any(c.startswith(prefix) for c in everything), f"no command starts with {prefix!r}"


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if commands(d) or toml_blocks(d)])
def test_document_commands_run_as_written(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))  # $PWD in a command is this folder
    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OGM_PROGRESS", "0")
    for text in toml_blocks(document):
        name = TOML_FILES[document]
        (tmp_path / name).write_text(text)
        spec, _ = load_experiment(name)
        assert expand(spec, name), f"{document}: {name} has no runs"
    runner, skipped = CliRunner(), False
    for line, command in commands(document):
        where = f"{document}:{line}: {command}"
        argv = shlex.split(os.path.expandvars(command), comments=True)
        assert argv[0] == "ogm" or command.startswith(tuple(SKIPPED)), f"{where}: not ogm"
        reason = next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)
        if reason is None:
            small = smoke(argv[1:])
            reason = small if isinstance(small, str) else None
        if reason is None and argv[1] == "report" and skipped and not Path(argv[2]).exists():
            reason = "reports runs that a skipped command would have made"
        if reason is not None:
            print(f"skipped {where}: {reason}")
            skipped = True
            continue
        result = runner.invoke(app, small)
        assert result.exit_code == 0, f"{where}\n{result.output}\n{result.exception!r}"
