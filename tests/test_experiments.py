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

from ogm.analysis.report import variant_labels
from ogm.experiments import registry
from ogm.experiments.runner import ERROR_FILE, run_experiment
from ogm.experiments.spec import (
    ExperimentError,
    RunSpec,
    builtin_names,
    expand,
    parse_experiment,
)
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


def test_a_list_of_sweep_tables_runs_the_union_of_their_grids_each_point_once():
    one_at_a_time = EXPERIMENT.replace(
        "sweep = { num_envs = [1, 2] }",
        "sweep = [{ num_envs = [1, 2] }, { num_envs = [2, 3], sleep = [0.0] }, { num_envs = [1] }]",
    )
    spec = parse_experiment(one_at_a_time, overrides=["seeds=[0]"])
    runs = [r for r in expand(spec) if r.agent == "fake"]
    assert [r.variant for r in runs] == [
        "fake__num_envs=1",
        "fake__num_envs=2",
        "fake__num_envs=2__sleep=0.0",
        "fake__num_envs=3__sleep=0.0",
    ]
    assert [r.config["sleep"] for r in runs] == [0.15, 0.15, 0.0, 0.0]
    experiment = {"spec": spec.model_dump(mode="json")}
    labels = variant_labels([r.variant for r in runs], experiment)
    assert labels["fake__num_envs=3__sleep=0.0"] == "fake num envs 3, sleep 0.0"
    for bad, message in (
        ("[{ num_envs = [1] }, { seed = [1] }]", r"sweep sets \['seed'\]"),
        ("[{ num_envs = [1] }, { num_envs = [] }]", "sweep list 'num_envs' is empty"),
    ):
        with pytest.raises(ExperimentError, match=message):
            parse_experiment(EXPERIMENT.replace("sweep = { num_envs = [1, 2] }", f"sweep = {bad}"))


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
            ogm = {r.variant: r.config["online"] for r in variants.values() if r.kind == "odt"}
            controls = {"demo_fraction": 0.5, "entropy": True, "max_kl_per_round": None}
            at_defaults = [c["strategy"] for c in ogm.values() if c.items() >= controls.items()]
            assert [s.split(":")[0] for s in at_defaults] == [
                "fixed",
                "percentile",
                "quantilizer",
                "exp_tilted",
                "odt",
            ]
            for key, value in (
                ("demo_fraction", 0.0),
                ("entropy", False),
                ("max_kl_per_round", 0.002),
            ):
                changed = [c for c in ogm.values() if c[key] == value]  # this control alone
                assert [c["strategy"] for c in changed] == ["quantilizer:0.1", "odt:2"]
                assert all(c[k] == v for c in changed for k, v in controls.items() if k != key)
            assert len(ogm) == 11 and len(spec.seeds) == 10
            algos = sorted(r.config["algo"] for r in variants.values() if r.kind == "sb3")
            assert algos == ["dqn", "ppo"]
            budgets = [r.config["total_timesteps"] for r in runs if r.kind in ("sb3", "kl_ppo")]
            budgets += [r.config["online"]["total_timesteps"] for r in runs if r.kind == "odt"]
            assert set(budgets) == {64000}  # one clock: environment steps
            assert sorted(r.config["n"] for r in variants.values() if r.kind == "best_of_n") == [
                4,
                16,
                64,
            ]
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

    monkeypatch.setitem(runner.BUDGET_KEYS, "fake", (("episodes", "episodes"),))
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


def test_a_gm_agent_run_as_an_odt_run_is_budgeted_by_its_pretraining_updates():
    """An odt run with ``online.rounds = 0`` (the GM agent under ODT's preset) takes no
    environment step whatever its online budget says: its cost is its offline updates."""
    from ogm.experiments import runner

    def odt_run(config):
        return RunSpec(variant="gm", agent="gm", kind="odt", seed=0, config=config)

    online = {"online": {"total_timesteps": 30000, "rounds": 50}, "offline": {"updates": 2000}}
    assert runner.budget_key(odt_run(online)) == ("online.total_timesteps", "env steps")
    gm = {"online": {"total_timesteps": 30000, "rounds": 0}, "offline": {"updates": 2000}}
    assert runner.budget_key(odt_run(gm)) == ("offline.updates", "updates")
    assert runner.budget_of(odt_run(gm)) == (2000.0, "updates")


def test_a_cost_that_grows_with_a_setting_is_calibrated_on_its_costliest_run(tmp_path, monkeypatch):
    """Best-of-n's cost grows with n as well as with its episodes (COST_SCALES): the
    estimate counts candidate episodes, calibrated on the largest n. Here a fake agent's
    cost grows with the time it sleeps per episode."""
    from ogm.experiments import runner

    monkeypatch.setitem(runner.BUDGET_KEYS, "fake", (("episodes", "episodes"),))
    monkeypatch.setitem(runner.COST_SCALES, "fake", ("sleep", "seconds asleep"))
    text = SMALL.split("[[agents]]")[0] + (
        '[[agents]]\nname = "base"\nkind = "fake"\nconfig = { episodes = 100 }\n'
        "sweep = { sleep = [0.01, 0.04] }\n"
    )
    plan = runner.plan_experiment(parse_experiment(text), tmp_path / "out", workers=1)
    rate = plan.rates["base"]
    assert "calibrated here at budgets 0.04 and 0.4" in rate.source  # sleep 0.04: 1, 10 episodes
    low, high = (e for e in plan.estimates)
    assert (low.budget, high.budget) == (pytest.approx(1.0), pytest.approx(4.0))
    assert high.unit == "seconds asleep"
    assert 3.0 <= high.seconds <= 8.0  # 100 episodes of 0.04 s, and the rest of a run
    assert high.seconds - rate.fixed == pytest.approx(4 * (low.seconds - rate.fixed))


# ----------------------------------------------------------------------------- environment sweeps

# Two agents on the hack-depth corridor at three depths: slip 0 and no trembling hand, so a
# demonstration walks straight to the goal in exactly k + 1 steps.
DEPTHS = """
name = "depths"
seeds = [0, 1]

[environment]
env_id = "ogm/HackDepth-v0"
kwargs = { slip = 0.0, max_steps = 12 }
sweep = { k = [1, 2, 3] }

[dataset]
episodes = 6
epsilon = 0.0

[common]
eval_episodes = 1

[budgets.dt]
n_layer = 1
n_embd = 16
context_len = 3
fidelity_targets = 2
updates = 10

[budgets.odt.online]
rounds = 1
updates_per_round = 5
episodes_per_round = 2

[[agents]]
name = "gm"
kind = "dt"

[[agents]]
name = "ogm"
kind = "odt"
config = { pretrained = "@gm" }
sweep = { "online.demo_fraction" = [0.0, 0.5] }
"""


def test_an_environment_sweep_runs_every_variant_at_every_point(tmp_path):
    runs = expand(parse_experiment(DEPTHS), out=tmp_path)
    assert len(runs) == 3 * 3 * 2  # points x variants x seeds
    assert [r.relpath for r in runs[:6]] == [
        "k=1/gm/seed_0",
        "k=1/gm/seed_1",
        "k=1/ogm__demo_fraction=0.0/seed_0",
        "k=1/ogm__demo_fraction=0.0/seed_1",
        "k=1/ogm__demo_fraction=0.5/seed_0",
        "k=1/ogm__demo_fraction=0.5/seed_1",
    ]
    assert [r.relpath for r in runs[6:]] == [
        r.relpath.replace("k=1/", f"k={k}/") for k in (2, 3) for r in runs[:6]
    ]
    for run in runs:
        k = run.env_point["k"]
        assert run.env_point == {"k": k} and run.variant.startswith(f"k={k}/")
        world = {"slip": 0.0, "max_steps": 12, "k": k}
        assert run.config["env_kwargs"] == world
        assert run.config["dataset"]["env_kwargs"] == world  # collected in the point's world
        if run.kind == "odt":  # the GM agent of the same depth and seed
            gm = f"k={k}/gm/seed_{run.seed}"
            assert run.needs == (gm,)
            assert run.config["pretrained"] == str((tmp_path / gm).resolve())
    assert {r.agent for r in runs if not r.needs} == {"gm"}


def test_set_narrows_an_environment_sweep_or_adds_a_key_to_it():
    narrowed = expand(parse_experiment(DEPTHS, overrides=["environment.sweep.k=[1,2]"]))
    assert sorted({r.variant.split("/")[0] for r in narrowed}) == ["k=1", "k=2"]
    product = expand(
        parse_experiment(DEPTHS, overrides=["environment.sweep.partial_signal=[false, true]"])
    )
    points = [r.env_point for r in product if r.agent == "gm" and r.seed == 0]
    assert points == [{"k": k, "partial_signal": p} for k in (1, 2, 3) for p in (False, True)]
    last = product[-1]
    assert last.relpath == "k=3__partial_signal=true/ogm__demo_fraction=0.5/seed_1"
    assert last.config["dataset"]["env_kwargs"] == {
        "slip": 0.0,
        "max_steps": 12,
        "k": 3,
        "partial_signal": True,
    }
    assert last.needs == ("k=3__partial_signal=true/gm/seed_1",)


def test_without_an_environment_sweep_the_layout_is_as_before():
    runs = expand(parse_experiment(DEPTHS.replace("sweep = { k = [1, 2, 3] }\n", "")))
    assert [r.relpath for r in runs if r.seed == 0] == [
        "gm/seed_0",
        "ogm__demo_fraction=0.0/seed_0",
        "ogm__demo_fraction=0.5/seed_0",
    ]
    assert all(r.env_point == {} and "k" not in r.config["env_kwargs"] for r in runs)
    assert runs[-1].needs == ("gm/seed_1",)


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        (
            "sweep = { kk = [1, 2] }",
            r"depths.toml:8: environment\.sweep: environment point kk=1: "
            r"ogm/HackDepth-v0 has no option 'kk'; its options: .*\bk\b",
        ),
        ("sweep = { k = [] }", r":8: environment\.sweep: sweep list 'k' is empty"),
        ("sweep = { k = [1, 99] }", r"environment point k=99: .*k must be .*99"),
        (
            "sweep = { k = [1, 2], slip = [0.1] }",
            r"environment\.sweep: sweep sets \['slip'\], which kwargs sets too",
        ),
        (  # two levels whose walls differ: folder names keep letters and digits only
            r'sweep = { art = ["#####\n#ALG#\n#####", "######\n#ALG #\n######"] }',
            r"sweep list 'art' gives the folder name art=ALG to more than one value",
        ),
    ],
)
def test_bad_environment_sweeps_name_the_key(sweep, expected):
    text = DEPTHS.replace("sweep = { k = [1, 2, 3] }", sweep)
    with pytest.raises(ExperimentError, match=expected):
        parse_experiment(text, "depths.toml")


def test_an_environment_sweep_runs_end_to_end_one_world_per_point(tmp_path, monkeypatch):
    """Smoke size (GM agent and OGM, depths 1 and 2, one seed): each point collects its own
    demonstrations, pretrains its own GM agent and finetunes from it."""
    import json

    from ogm.analysis.runs import find_run_dirs, variant_of
    from ogm.data.dataset import build_dataset, load_trajectories
    from ogm.data.recipe import DatasetRecipe
    from ogm.train.offline import dataset_cache_dir

    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path / "cache"))
    text = DEPTHS.replace('sweep = { "online.demo_fraction" = [0.0, 0.5] }\n', "")
    spec = parse_experiment(text, overrides=["seeds=[0]", "environment.sweep.k=[1, 2]"])
    out = tmp_path / "out"
    summary = run_experiment(spec, out, workers=2, progress=False)
    assert [(o.run.relpath, o.status) for o in summary.outcomes] == [
        ("k=1/gm/seed_0", "done"),
        ("k=1/ogm/seed_0", "done"),
        ("k=2/gm/seed_0", "done"),
        ("k=2/ogm/seed_0", "done"),
    ]
    record = json.loads((out / "experiment.json").read_text())
    assert {r["path"]: r["env_point"] for r in record["runs"]} == {
        "k=1/gm/seed_0": {"k": 1},
        "k=1/ogm/seed_0": {"k": 1},
        "k=2/gm/seed_0": {"k": 2},
        "k=2/ogm/seed_0": {"k": 2},
    }
    for k in (1, 2):
        gm, ogm = RunDir.open(out / f"k={k}/gm/seed_0"), RunDir.open(out / f"k={k}/ogm/seed_0")
        assert gm.config["env_kwargs"]["k"] == ogm.config["env_kwargs"]["k"] == k
        assert ogm.config["pretrained"] == str((out / f"k={k}/gm/seed_0").resolve())
        recipe = DatasetRecipe.model_validate(gm.config["dataset"])
        demos = load_trajectories(build_dataset(recipe, dataset_cache_dir()))  # cached
        assert [len(d.actions) for d in demos] == [k + 1] * 6  # straight to the goal at depth k
    # the report's grouping keeps the points apart
    assert {variant_of(p, out) for p in find_run_dirs(out)} == {
        "k=1/gm",
        "k=1/ogm",
        "k=2/gm",
        "k=2/ogm",
    }


SMALL_SWEPT = SMALL.replace(
    'env_id = "ogm/TomatoWatering-v0"\n',
    'env_id = "ogm/TomatoWatering-v0"\nsweep = { max_steps = [20, 30] }\n',
)


def test_dry_run_of_an_environment_sweep_times_each_agent_once(tmp_path, monkeypatch):
    from ogm.experiments import runner

    monkeypatch.setitem(runner.BUDGET_KEYS, "fake", (("episodes", "episodes"),))
    plan = runner.plan_experiment(parse_experiment(SMALL_SWEPT), tmp_path / "out", workers=1)
    assert [e.run.relpath for e in plan.estimates] == [
        "max_steps=20/base/seed_0",
        "max_steps=20/next/seed_0",
        "max_steps=30/base/seed_0",
        "max_steps=30/next/seed_0",
    ]
    assert set(plan.rates) == {"base", "next"}
    assert isinstance(plan.rates["next"], runner.Rate)  # it read base's calibration run
    base20, next20, base30, next30 = (e.seconds for e in plan.estimates)
    assert (base20, next20) == (base30, next30)  # one rate per agent, at every point


def test_ray_runs_an_environment_sweep_in_its_folders(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Ray workers inherit the driver's environment: there they import the fake agent from here
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_experiment(parse_experiment(SMALL_SWEPT), tmp_path, backend="ray")
    finally:
        ray.shutdown()
    assert [(o.run.relpath, o.status) for o in summary.outcomes] == [
        ("max_steps=20/base/seed_0", "done"),
        ("max_steps=20/next/seed_0", "done"),
        ("max_steps=30/base/seed_0", "done"),
        ("max_steps=30/next/seed_0", "done"),
    ]
    for steps in (20, 30):
        run = RunDir.open(tmp_path / f"max_steps={steps}/next/seed_0")
        assert run.config["env_kwargs"] == {"max_steps": steps}
        assert run.config["init"] == str((tmp_path / f"max_steps={steps}/base/seed_0").resolve())


REUSE = """
name = "reuse"
seeds = [0]

[environment]
env_id = "ogm/TomatoWatering-v0"

[dataset]
episodes = 4

[common]
eval_episodes = 2
num_envs = 2

[budgets.dt]
n_layer = 1
n_head = 1
context_len = 4
updates = 12
batch_size = 8
fidelity_targets = 0

[[agents]]
name = "fake"
kind = "fake"
config = { episodes = 3 }
sweep = { num_envs = [1, 2] }

[[agents]]
name = "narrow"
kind = "dt"
config = { n_embd = 16 }

[[agents]]
name = "wide"
kind = "dt"
config = { n_embd = 24 }
"""


def test_a_worker_runs_runs_one_after_another_and_each_computes_what_it_would_alone(
    tmp_path, monkeypatch
):
    """The local pool's workers live for the whole grid (imports paid once per worker): with
    one worker every run shares its process, and a run that follows others in it writes the
    same episodes as the same run in a process of its own."""
    from ogm.train.offline import OfflineConfig
    from ogm.train.offline import run as run_offline

    monkeypatch.setenv("OGM_CACHE_DIR", str(tmp_path / "cache"))
    spec = parse_experiment(REUSE)
    out = tmp_path / "out"
    summary = run_experiment(spec, out, workers=1, progress=False)
    assert summary.count("done") == 4
    pids = {(out / r.relpath / "pid").read_text() for r in expand(spec) if r.kind == "fake"}
    assert len(pids) == 1 and int(pids.pop()) != os.getpid()
    for run in expand(spec):
        if run.kind == "dt":
            alone = tmp_path / "alone" / run.relpath
            run_offline(OfflineConfig.model_validate(run.config), alone)
            ours = (out / run.relpath / "episodes.csv").read_text()
            assert ours == (alone / "episodes.csv").read_text()
