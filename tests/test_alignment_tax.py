"""The alignment-tax experiments: experiment sizes, environment and dataset sweeps,
collect-rl datasets named by a recipe, the overtaking step, and alignment-tax-mujoco end to
end at its smoke size (needs the mujoco extra, which CI installs)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from ogm.analysis.findings import EvalPoint, RunMetrics, Variant
from ogm.analysis.overtaking import first_step_above, overtaking, overtakings
from ogm.analysis.runs import Baseline, Run
from ogm.experiments.spec import ExperimentError, expand, load_experiment, parse_experiment
from ogm.train.config import ConfigError, validate_config
from ogm.train.online import OnlineConfig

MUJOCO = importlib.util.find_spec("mujoco") is not None


def test_a_size_merges_into_the_file_and_is_recorded() -> None:
    full, _ = load_experiment("alignment-tax-mujoco")
    smoke, _ = load_experiment("alignment-tax-mujoco", size="smoke")
    assert full.size is None and smoke.size == "smoke"
    assert full.seeds == [0, 1, 2, 3, 4] and smoke.seeds == [0]
    assert smoke.environment.sweep == {"env_id": ["Hopper-v5"]}
    assert smoke.dataset.total_timesteps == 1200 and full.dataset.total_timesteps == 1_000_000
    assert smoke.dataset.source == "collect-rl"  # kept from the file: tables merge by key
    assert smoke.common == {"num_envs": 1, "eval_every": 300, "eval_episodes": 2}
    assert smoke.budgets["odt"]["online"]["preset"] == "odt"
    assert smoke.budgets["odt"]["online"]["total_timesteps"] == 400
    cpu, _ = load_experiment("alignment-tax-mujoco", ["seeds=1"], size="cpu")
    assert [a.name for a in cpu.agents] == ["gm", "odt", "sac"] and cpu.seeds == [0]
    with pytest.raises(ExperimentError, match=r"no size 'large'.*its sizes: cpu, smoke"):
        load_experiment("alignment-tax-mujoco", size="large")
    text = 'name = "x"\nseeds = 1\n[environment]\nenv_id = "ogm/TomatoWatering-v0"\n'
    text += '[[agents]]\nname = "ppo"\nkind = "sb3"\n[sizes.small]\nname = "y"\n'
    with pytest.raises(ExperimentError, match=r"size 'small' sets \['name'\]"):
        parse_experiment(text)


def test_environment_and_dataset_sweeps_multiply_into_settings() -> None:
    full, _ = load_experiment("alignment-tax-mujoco")
    runs = expand(full)
    settings = sorted({r.variant.split("/")[0] for r in runs})
    assert settings == sorted(
        f"env_id={env}__quality={q}"
        for env in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
        for q in ("medium", "medium-replay")
    )
    assert len(runs) == 6 * 8 * 5  # settings x variants x seeds
    for run in runs:
        env_id, quality = run.env_point["env_id"], run.env_point["dataset.quality"]
        assert run.config["env_id"] == env_id == run.config["dataset"]["env_id"]
        assert run.config["dataset"]["quality"] == quality
        assert "sweep" not in run.config["dataset"]
        if run.kind == "odt":  # ODT's per-environment settings follow the swept env id
            target = {"Hopper-v5": 3600, "HalfCheetah-v5": 6000, "Walker2d-v5": 5000}[env_id]
            assert run.config["online"]["eval_strategy"] == f"fixed:{target}"
    hopper = [r for r in runs if r.env_point["env_id"] == "Hopper-v5" and r.kind == "odt"]
    replay = {r.config["online"]["learning_rate"] for r in hopper if "replay" in r.variant}
    assert replay == {2e-3}  # ODT's hopper-medium-replay row, read off the recipe's quality
    gm = next(r for r in runs if r.variant.endswith("replay/odt") and r.seed == 0)
    assert gm.needs == ("env_id=Hopper-v5__quality=medium-replay/gm/seed_0",)


def test_a_collect_rl_recipe_is_checked_where_it_is_named() -> None:
    from ogm.data.recipe import RLDatasetRecipe

    base = {"source": "collect-rl", "env_id": "Pendulum-v1", "total_timesteps": 400}
    medium = RLDatasetRecipe(**base)
    replay = RLDatasetRecipe(**base, quality="medium-replay")
    assert medium.collection_digest() == replay.collection_digest()  # one training for both
    assert medium.path("/c") == Path("/c") / f"collect-rl-pendulum-{medium.collection_digest()}" / (
        "datasets/medium"
    )
    cases = {
        "dataset: source must be 'collect-rl'": {**base, "source": "d4rl"},
        "dataset.collect-rl.quality": {**base, "quality": "good"},
        "dataset.collect-rl.hyperparams: buffer_size=": {
            **base,
            "hyperparams": {"buffer_size": 10**12},
        },
        "dataset.demonstrators.episodes": {"env_id": "ogm/TomatoWatering-v0", "episodes": 0},
    }
    for message, dataset in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            validate_config(OnlineConfig, {"env_id": "Pendulum-v1", "dataset": dataset})


# ----------------------------------------------------------------------------- overtaking


def _variant(name: str, kind: str, curves: list[list[tuple[float, float]]]) -> Variant:
    """A measured variant with one run per curve of (env steps, performance) evaluations;
    it trains when any curve has a step past 0."""
    runs = []
    for seed, curve in enumerate(curves):
        trains = any(step > 0 for step, _ in curve)
        episodes = {"phase": np.array(["train" if trains else "eval"])}
        run = Run(Path(name) / f"seed_{seed}", name, kind, seed, "done", {}, episodes)
        points = [EvalPoint(step, 4, value, value, math.nan) for step, value in curve]
        runs.append(
            RunMetrics(run, {"greedy": points}, None, Baseline("", None, None)),
        )
    return Variant(name, runs)


def test_the_overtaking_step_is_where_the_mean_stays_above() -> None:
    steps = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    a = np.array([[0, 2, 1, 3, 4], [0, 2, 1, 3, 4.0]])
    b = np.array([[1, 1, 1, 1, 1.0]])
    assert first_step_above(a, b, steps) == 30.0  # above at 10, not at 20, above from 30 on
    assert first_step_above(a, b + 5, steps) is None
    assert first_step_above(a + 5, b, steps) == 0.0
    rng = np.random.default_rng(0)
    # OGM rises 0 -> 8 over 80k steps in every seed; SAC rises 0 -> 4; GM is flat at 2
    spread = (-0.5, -0.25, 0, 0.25, 0.5)
    ogm = _variant("s/ogm", "odt", [[(s * 1e4, s + d) for s in range(9)] for d in spread])
    sac = _variant("s/sac", "sb3", [[(s * 1e4, s / 2 + d / 2) for s in range(9)] for d in spread])
    gm = _variant("s/gm", "odt", [[(0.0, 2.0)], [(0.0, 2.2)]])
    versus_sac = overtaking(ogm, sac, "greedy", rng)
    assert versus_sac.step == 10_000 and versus_sac.budget == 80_000 and versus_sac.interval
    # at step 0 half the resamples have OGM above; from 10k on nearly all of them
    assert versus_sac.low == 0 and versus_sac.high == 10_000
    versus_gm = overtaking(ogm, gm, "greedy", rng)  # a reference line: GM's final, 2.1
    assert versus_gm.step == 30_000 and versus_gm.seeds == (5, 2)
    assert not versus_gm.interval and versus_gm.low is versus_gm.high is None  # 2 GM seeds
    slow = _variant("s/slow", "odt", [[(s * 1e4, 1.0) for s in range(9)]] * 5)
    never = overtaking(slow, sac, "greedy", rng)
    assert never.step is None and never.interval and never.low is None and never.high is None
    found = overtakings([ogm, sac, gm, _variant("t/sac", "sb3", [[(0, 9), (9e4, 9)]])], ["greedy"])
    assert [(o.variant, o.baseline) for o in found] == [("s/ogm", "s/sac"), ("s/ogm", "s/gm")]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def mujoco_smoke(run_smoke_size) -> Path:
    return run_smoke_size("alignment-tax-mujoco", 16)


@pytest.mark.skipif(not MUJOCO, reason="needs the mujoco extra: pip install -e '.[mujoco]'")
def test_alignment_tax_mujoco_runs_end_to_end_at_smoke_size(mujoco_smoke: Path) -> None:
    from ogm.data.collect_rl import D4RL_REFERENCE_SCORES
    from ogm.data.dataset import dataset_metadata

    (collection,) = (mujoco_smoke / "cache" / "datasets").glob("collect-rl-hopper-*")
    for quality in ("medium", "medium-replay"):  # one SAC training made both
        meta = dataset_metadata(collection / "datasets" / quality)["ogm"]
        assert meta["d4rl_name"] == f"hopper-{quality}" and meta["normalisation"] == "d4rl"
    report = mujoco_smoke / "runs" / "report"
    with (report / "overtaking.csv").open() as handle:
        found = list(csv.DictReader(handle))
    # per setting: 4 online variants (ODT, 3 OGM) x 4 others (GM, GM rh, SAC, KL) x 2 modes
    assert len(found) == 2 * 4 * 4 * 2
    with (report / "normalised_scores.csv").open() as handle:
        scores = list(csv.DictReader(handle))
    assert len(scores) == 16
    low, high = D4RL_REFERENCE_SCORES["hopper"]
    with (report / "runs.csv").open() as handle:
        runs = {r["variant"]: float(r["greedy eval: performance"]) for r in csv.DictReader(handle)}
    for row in scores:
        expected = 100 * (runs[row["variant"]] - low) / (high - low)
        assert float(row["greedy"].split()[0]) == pytest.approx(expected, abs=0.05)
