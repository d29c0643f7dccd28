"""The four built-in studies at smoke size: each experiment file validates, every run
computes and writes its tables, and ``ogm report`` makes the studies' page from them.

Runs execute in this process (``execute_run``, what a runner's worker does) with the
experiment's configs shrunk; one experiment also goes through the runner's spawned
workers, so that a study kind is found from a fresh interpreter.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from ogm.analysis.report import write_report
from ogm.experiments import registry
from ogm.experiments.runner import execute_run, run_experiment
from ogm.experiments.spec import expand, load_experiment

# --set overrides, then values merged into each kind's configs (agents' own values win over
# --set budgets, so the smallest sizes are set on the run configs directly)
SMOKE: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {
    "kl-equivalence": (
        [],
        {
            "kl_equivalence": {
                "mdps": ["bandit", "gamble"],
                "kappas": [0.0, 1.0],
                "episodes": 400,
                "dt": {"updates": 30},
            }
        },
    ),
    "self-training": (
        ["dataset.episodes=5"],
        {
            "self_training": {
                "rounds": 1,
                "updates_per_round": 2,
                "episodes_per_round": 4,
                "num_envs": 4,
                "demo_episodes": 50,
                "sample_sizes": [4, 16],
                "repeats": 2,
                "probe_segments": 8,
                "dt": {"updates": 10},
            }
        },
    ),
    "stitching": (
        [],
        {
            "stitching": {
                "episodes": 20,
                "bc_updates": 10,
                "eval_episodes": 2,
                "num_envs": 2,
                "dt": {"updates": 10},
            }
        },
    ),
    "simulator": (
        ["dataset.episodes=10"],
        {
            "dt": {"updates": 10, "eval_episodes": 1, "num_envs": 2},
            "simulator": {
                "num_envs": 2,
                "eval_episodes": 1,
                "ogm": {
                    "percentile": {"strategy": "percentile:95", "rounds": 1, "updates_per_round": 2}
                },
                "kl_betas": [0.1],
                "kl_ppo": {
                    "total_timesteps": 16,
                    "n_steps": 8,
                    "batch_size": 8,
                    "n_epochs": 1,
                    "eval_every": 16,
                },
                "fidelity_targets": 2,
                "fidelity_episodes": 1,
                "probe_segments": 8,
            },
        },
    ),
}


def merge(values: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key, value in updates.items():
        out[key] = (
            merge(out.get(key, {}), value) if isinstance(value, dict) and key != "ogm" else value
        )
    return out


def run_smoke(name: str, out: Path) -> None:
    overrides, shrink = SMOKE[name]
    spec, _ = load_experiment(name, ["seeds=1", *overrides])
    runs = sorted(expand(spec, out=out), key=lambda run: len(run.needs))  # references first
    for run in runs:
        entry = registry.get(run.kind)
        config = merge(run.config, shrink.get(run.kind, {}))
        error = execute_run(entry.module, entry.config, entry.run, config, str(out / run.relpath))
        assert error is None, f"{run.relpath}: {error}"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", list(SMOKE))
def test_builtin_study_runs_and_reports(name, tmp_path):
    out = tmp_path / name
    run_smoke(name, out)
    page = write_report(out)
    assert page == out / "report" / "index.html"
    text = page.read_text()
    markdown = (out / "report" / "studies.md").read_text()
    assert f"## {name}:" in markdown and f'id="{name}"' in text
    records = [json.loads(p.read_text()) for p in out.rglob("run.json")]
    assert all(r["status"] == "done" for r in records)
    if name == "kl-equivalence":
        table = rows(out / "kl-equivalence" / "seed_0" / "kl_equivalence.csv")
        assert {r["method"] for r in table} >= {"dt", "tilted", "kl_optimum", "factorised"}
        deterministic = [r for r in table if r["mdp"] == "bandit" and r["method"] == "tilted"]
        assert all(float(r["tv_kl_optimum"]) < 1e-9 for r in deterministic)
    if name == "self-training":
        loops = rows(out / "gridworld" / "seed_0" / "loops.csv")
        assert len(loops) == 2 * 2 * 2  # strategies x labels x (round 0, round 1)
    if name == "stitching":
        agents = {
            r["agent"]
            for r in rows(out / "stitching__exclude_optimal=true" / "seed_0" / "stitching.csv")
        }
        assert {"demonstrator_left", "bc", "filtered_bc", "dt_optimum"} <= agents
    if name == "simulator":
        table = rows(out / "simulator" / "seed_0" / "simulator.csv")
        assert {r["agent"] for r in table} == {"gm", "ogm-percentile", "kl_ppo-beta=0.1"}


def test_a_study_through_the_runners_workers(tmp_path):
    """A spawned worker finds the study kind (and the finite-MDP env id) by its path."""
    overrides = [
        "seeds=1",
        'budgets.kl_equivalence.mdps=["lottery"]',
        "budgets.kl_equivalence.kappas=[1.0]",
        "budgets.kl_equivalence.episodes=200",
        "budgets.kl_equivalence.dt.updates=20",
    ]
    spec, text = load_experiment("kl-equivalence", overrides)
    summary = run_experiment(spec, tmp_path, text=text, workers=1, progress=False)
    assert summary.count("done") == 1, [o.detail for o in summary.failed]
    assert (tmp_path / "kl-equivalence" / "seed_0" / "kl_equivalence.csv").is_file()
