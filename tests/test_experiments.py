"""Experiment files, grid expansion and the runner (with a fake, fast, checkpointing agent)."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from ogm.experiments import registry
from ogm.experiments.runner import ERROR_FILE, run_experiment
from ogm.experiments.spec import ExperimentError, builtin_names, expand, parse_experiment
from ogm.train.config import CommonConfig
from ogm.train.rundir import RunDir


# ----------------------------------------------------------------------------- the fake agent
class FakeConfig(CommonConfig):
    """A fake agent: logs ``episodes`` episodes of a behaviour that emerges at episode 10."""

    kind: Literal["fake"] = "fake"
    episodes: int = 20
    sleep: float = 0.0
    fail: bool = False
    fail_at: int = 3  # the episode a failing run fails at (0: before its first checkpoint)
    init: str | None = None  # a run this one would start from ("@agent" in experiments)


def fake_run(config: FakeConfig, run_dir: Path) -> None:
    """Writes one episode per step and checkpoints after each, like a real agent."""
    run = RunDir.open_or_create(run_dir, kind="fake", config=config, seed=config.seed)
    checkpoint = run.resume()
    rng = np.random.default_rng(config.seed)
    start = 0
    if checkpoint is not None:
        rng.bit_generator.state = checkpoint.state["rng"]
        start = checkpoint.step
    (Path(run_dir) / "pid").write_text(str(os.getpid()))
    log = run.episodes(["hack"])
    for episode in range(start, config.episodes):
        if config.fail and episode == config.fail_at:
            raise RuntimeError("fake failure on purpose")
        length = 10
        count = int(rng.binomial(length, 1.0 / (1.0 + math.exp(-(episode - 10) / 2.0))))
        log.append(
            {
                "phase": "online",
                "round": episode,
                "episode": episode,
                "env_steps": (episode + 1) * length,
                "return": float(rng.normal(count, 1.0)),
                "performance": float(length - count),
                "length": length,
                "target_return": 1.0,
                "ev_hack": count,
                "ev_hack_share": count / length,
            }
        )
        time.sleep(config.sleep)
        run.save_checkpoint(episode + 1, state={"rng": rng.bit_generator.state})
    run.set_status("done")


registry.register("fake", __name__, "FakeConfig", "fake_run")

EXPERIMENT = """
name = "tiny"
seeds = [0, 1]

[environment]
env_id = "ogm/TomatoWatering-v0"

[common]
eval_episodes = 0

[budgets.fake]
episodes = 16

[[agents]]
name = "fake"
kind = "fake"
config = { sleep = 0.15 }
sweep = { num_envs = [1, 2] }

[[agents]]
name = "broken"
kind = "fake"
config = { fail = true }

[[agents]]
name = "after"
kind = "fake"
config = { init = "@broken" }
"""


# ----------------------------------------------------------------------------- spec


def test_expand_builds_the_grid_with_readable_names_and_merged_configs():
    spec = parse_experiment(EXPERIMENT)
    runs = expand(spec)
    assert [r.relpath for r in runs] == [
        "fake__num_envs=1/seed_0",
        "fake__num_envs=1/seed_1",
        "fake__num_envs=2/seed_0",
        "fake__num_envs=2/seed_1",
        "broken/seed_0",
        "broken/seed_1",
        "after/seed_0",
        "after/seed_1",
    ]
    first = runs[0].config
    assert first["episodes"] == 16  # from budgets.fake
    assert first["eval_episodes"] == 0  # from common
    assert first["sleep"] == 0.15 and first["num_envs"] == 1 and first["seed"] == 0
    assert first["env_id"] == "ogm/TomatoWatering-v0"
    assert runs[3].config["num_envs"] == 2 and runs[3].config["seed"] == 1
    assert runs[7].config["init"] == "broken/seed_1" and runs[7].needs == ("broken/seed_1",)
    absolute = expand(spec, out=Path("/data/x"))[6]
    assert absolute.config["init"] == "/data/x/broken/seed_0"


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("@nobody", "is not an agent of this experiment"),
        ("@fake", r"has a sweep \(a reference needs a single variant\)"),
        ("@after", "is the agent itself"),
    ],
)
def test_bad_references_are_named(reference, problem):
    text = EXPERIMENT.replace(
        'config = { init = "@broken" }', f'config = {{ init = "{reference}" }}'
    )
    with pytest.raises(
        ExperimentError, match=f"agent 'after' refers to '{reference}', which {problem}"
    ):
        parse_experiment(text)


def test_seed_count_expands_to_range():
    spec = parse_experiment(EXPERIMENT.replace("seeds = [0, 1]", "seeds = 3"))
    assert spec.seeds == [0, 1, 2]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("seeds = [0, 1]", "seeds = [0, 0]"), r":3: seeds: seeds repeat"),
        (
            ('kind = "fake"\nconfig = { fail', 'kind = "nope"\nconfig = { fail'),
            r":22: agents\[1\]\.kind: unknown agent kind 'nope'",
        ),
        (("[common]", "[commn]"), r":8: commn: unknown key; did you mean 'common'\?"),
        (
            ("sweep = { num_envs = [1, 2] }", "sweep = { num_envs = [] }"),
            r":18: agents\[0\]\.sweep: sweep list 'num_envs' is empty",
        ),
        (
            ("config = { sleep = 0.15 }", "config = { seed = 3 }"),
            r"agents\[0\]: config sets \['seed'\]",
        ),
        (('name = "fake"', 'name = "fa ke"'), r":15: agents\[0\]\.name: 'fa ke' must start"),
        (
            ('env_id = "ogm/TomatoWatering-v0"', "env = 1"),
            r":5: environment\.env_id: Field required",
        ),
        (("[budgets.fake]", "[budgets.fake"), r"not valid TOML: .*line 11"),
    ],
)
def test_invalid_experiment_files_name_line_and_field(edit, expected):
    text = EXPERIMENT.replace(*edit)
    assert text != EXPERIMENT
    with pytest.raises(ExperimentError, match=expected):
        parse_experiment(text, "tiny.toml")


def test_agent_config_errors_name_the_agent_variant_and_field():
    text = EXPERIMENT.replace("config = { sleep = 0.15 }", 'config = { sleep = "slow", bogus = 1 }')
    with pytest.raises(ExperimentError) as info:
        expand(parse_experiment(text), "tiny.toml")
    message = str(info.value)
    # every variant has the same problems: each is reported once, for the agent
    assert message.count("sleep:") == 1 and "agents[0] (fake): sleep: Input should be" in message
    assert "agents[0] (fake): bogus: unknown key" in message


def test_a_problem_of_some_variants_names_them():
    text = EXPERIMENT.replace("sweep = { num_envs = [1, 2] }", "sweep = { num_envs = [1, 0] }")
    with pytest.raises(ExperimentError) as info:
        expand(parse_experiment(text), "tiny.toml")
    assert (
        "agents[0] (fake): num_envs: Input should be greater than 0 (variants fake__num_envs=0)"
        in str(info.value)
    )


def test_a_typo_in_set_on_a_builtin_is_reported_once_with_did_you_mean():
    from ogm.experiments.spec import load_experiment

    spec, _ = load_experiment("tomato-watering-quick", ["budgets.odt.online.round=3"])
    with pytest.raises(ExperimentError) as info:
        expand(spec)
    message = str(info.value)
    assert "\n" not in message  # one line
    assert message.count("online.round: unknown key; did you mean 'rounds'?") == 1
    assert "agents[1] (ogm): online.round" in message
    with pytest.raises(ExperimentError, match=r"seed: unknown key; did you mean 'seeds'\?"):
        load_experiment("tomato-watering-quick", ["seed=3"])


def test_builtin_experiments_expand_into_valid_configs(tmp_path):
    from ogm.experiments.spec import load_experiment

    names = builtin_names()
    full = ("side-effects", "tomato-watering", "absent-supervisor", "boat-race")
    assert set(full) | {"tomato-watering-quick"} <= set(names)
    for name in names:
        spec, _ = load_experiment(name)
        runs = expand(spec, name, out=tmp_path)  # validated by each kind's config class
        assert spec.name == name
        for run in runs:  # every reference points at a run of the same seed in the grid
            assert all(need.endswith(f"/seed_{run.seed}") for need in run.needs)
        if name in full:
            variants = {r.variant: r for r in runs}
            ogm = [r for r in variants.values() if r.kind == "odt"]
            assert len(ogm) == 16  # 4 strategies x demo share x entropy on/off
            assert {r.config["online"]["demo_fraction"] for r in ogm} == {0.0, 0.5}
            assert {r.config["online"]["entropy"] for r in ogm} == {True, False}
            assert {r.config["online"]["strategy"].split(":")[0] for r in ogm} == {
                "fixed",
                "percentile",
                "quantilizer",
                "exp_tilted",
            }
            assert sorted(r.config["beta"] for r in variants.values() if r.kind == "kl_ppo") == [
                0.01,
                0.1,
                1.0,
            ]
            assert {r.config["top_fraction"] for r in variants.values() if r.kind == "bc"} == {
                1.0,
                0.1,
            }
            assert all(
                r.config["pretrained"] == str(tmp_path / "gm" / f"seed_{r.seed}")
                for r in runs
                if r.kind == "odt"
            )


def test_unknown_experiment_lists_builtins():
    from ogm.experiments.spec import load_experiment

    with pytest.raises(ExperimentError, match=r"built-ins: .*tomato-watering-quick"):
        load_experiment("no-such-experiment")


# ----------------------------------------------------------------------------- runner


def _reference_csv(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "reference"
    fake_run(FakeConfig.model_validate(config), path)
    return (path / "episodes.csv").read_text()


def test_runner_survives_failure_and_sigkill_then_resumes_identically(tmp_path):
    spec = parse_experiment(EXPERIMENT, overrides=["seeds=[0]"])  # 4 runs, one of them killed
    out = tmp_path / "out"
    victim = out / "fake__num_envs=2" / "seed_0"
    summaries = []
    thread = threading.Thread(
        target=lambda: summaries.append(run_experiment(spec, out, workers=2, progress=False))
    )
    thread.start()
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and thread.is_alive():
        episodes = victim / "episodes.csv"
        if (
            (victim / "pid").exists()
            and episodes.exists()
            and len(episodes.read_text().splitlines()) > 5
        ):
            os.kill(int((victim / "pid").read_text()), signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    thread.join(120)
    assert killed, "the victim run never got going"
    (first,) = summaries
    failed = {o.run.relpath: o.detail for o in first.failed}
    assert set(failed) == {"fake__num_envs=2/seed_0", "broken/seed_0", "after/seed_0"}
    assert "SIGKILL" in failed["fake__num_envs=2/seed_0"]
    assert failed["after/seed_0"] == "needs ['broken/seed_0'], which did not finish"
    assert not (out / "after").exists()  # never started
    assert "fake failure on purpose" in failed["broken/seed_0"]
    assert "fake failure on purpose" in (out / "broken/seed_0" / ERROR_FILE).read_text()
    assert RunDir.open(out / "broken/seed_0").status == "failed"
    assert first.count("done") == 1
    assert RunDir.open(victim).status == "running"
    partial = len((victim / "episodes.csv").read_text().splitlines())
    assert partial < 17  # header + 16 episodes: it really was cut short

    second = run_experiment(spec, out, workers=2, progress=False)
    assert second.count("skipped") == 1
    assert {o.run.relpath for o in second.outcomes if o.status == "done"} == {
        "fake__num_envs=2/seed_0"
    }
    assert RunDir.open(victim).status == "done"
    victim_config = next(r.config for r in expand(spec) if r.relpath == "fake__num_envs=2/seed_0")
    assert (victim / "episodes.csv").read_text() == _reference_csv(tmp_path, victim_config)
    record = (out / "experiment.json").read_text()
    assert '"fake__num_envs=2/seed_0"' in record


def test_ray_backend_without_ray_fails_before_anything_is_written(tmp_path, monkeypatch):
    from ogm.experiments.runner import RunnerError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    spec = parse_experiment(EXPERIMENT)
    with pytest.raises(RunnerError, match=r"pip install 'ogm\[ray\]'"):
        run_experiment(spec, tmp_path / "out", backend="ray", progress=False)
    assert not (tmp_path / "out").exists()


SMALL = """
name = "small"
seeds = [0]

[environment]
env_id = "ogm/TomatoWatering-v0"

[common]
eval_episodes = 0

[[agents]]
name = "base"
kind = "fake"
config = { episodes = 6, sleep = 0.05 }

[[agents]]
name = "next"
kind = "fake"
config = { episodes = 6, init = "@base" }
"""


def test_a_failed_start_is_restarted_under_the_corrected_config(tmp_path):
    out = tmp_path / "out"
    broken = parse_experiment(SMALL.replace("sleep = 0.05", "fail = true, fail_at = 0"))
    first = run_experiment(broken, out, workers=1, progress=False)
    assert [o.status for o in first.outcomes] == ["failed", "failed"]
    assert RunDir.open(out / "base" / "seed_0").status == "failed"
    fixed = run_experiment(parse_experiment(SMALL), out, workers=1, progress=False)
    assert [o.status for o in fixed.outcomes] == ["done", "done"]
    assert RunDir.open(out / "base" / "seed_0").config["sleep"] == 0.05


def test_runs_with_progress_under_another_config_are_an_error_saying_what_to_do(tmp_path):
    from ogm.experiments.runner import RunnerError

    out = tmp_path / "out"
    run_experiment(parse_experiment(SMALL), out, workers=1, progress=False)
    record = (out / "experiment.json").read_text()
    changed = parse_experiment(SMALL.replace("episodes = 6, sleep", "episodes = 7, sleep"))
    with pytest.raises(RunnerError) as info:
        run_experiment(changed, out, workers=1, progress=False)
    message = str(info.value)
    assert "base/seed_0: differs in episodes" in message
    assert f"rm -r {out / 'base' / 'seed_0'}" in message
    assert (out / "experiment.json").read_text() == record  # nothing written


def test_dry_run_estimates_from_a_calibration_then_from_finished_runs(tmp_path, monkeypatch):
    from ogm.experiments import runner

    monkeypatch.setitem(runner.BUDGET_KEYS, "fake", ("episodes", "episodes"))
    spec = parse_experiment(SMALL.replace("episodes = 6, sleep", "episodes = 100, sleep"))
    out = tmp_path / "out"
    plan = runner.plan_experiment(spec, out, workers=1)
    assert not out.exists()  # a dry run writes nothing
    base = plan.rates["base"]
    # 1 and 10 calibration episodes at 0.05 s each: about 0.05 s per episode
    assert "calibrated here at budgets 1 and 10" in base.source
    assert 0.04 <= base.per_unit <= 0.2
    first = plan.estimates[0]
    assert (first.run.relpath, first.budget, first.unit, first.done) == (
        "base/seed_0",
        100.0,
        "episodes",
        False,
    )
    assert first.seconds == pytest.approx(base.fixed + 100 * base.per_unit)
    assert isinstance(plan.rates["next"], runner.Rate)  # calibrated on base's calibration run
    assert plan.wall_seconds == pytest.approx(plan.seconds)  # one worker, one run per wave

    small = parse_experiment(SMALL)
    run_experiment(small, out, workers=1, progress=False)
    again = runner.plan_experiment(small, out, workers=1)
    assert all(e.done for e in again.estimates) and again.seconds == 0
    assert again.rates["base"].source == f"1 finished runs in {out}"
