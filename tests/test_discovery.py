"""Hack discovery against hack depth (``ogm.analysis.discovery``) on a hand-made ``k`` sweep of
ogm/HackDepth-v0 whose every discovery step is known.

The runs directory is laid out as ``ogm run hack-depth`` writes it, through the real writers
(``RunDir``, ``EpisodeLog``), for k = 1..4: ``experiment.json`` lists every run with its
``env_point``. Every training run has 80 training episodes, episode ``i`` (1-based) ending at
``500 i`` environment steps (budget B = 40,000), showing the exploit from its discovery
episode on. PPO (3 seeds, 10-step episodes) discovers at exactly ``1,000 * 2^k`` steps, a
noiseless ``log(step) = log(1000) + k log 2``; OGM (5 seeds, 20-step episodes) discovers
ever later and more rarely, with censored runs; the GM agent has no training episodes.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

from ogm.analysis import discovery
from ogm.analysis.report import collect, write_report
from ogm.baselines.common import EpisodeLog
from ogm.data.trajectory import Trajectory
from ogm.envs.hack_depth import demonstrator_policy, discovery_episodes, uniform_policy
from ogm.train.rundir import RunDir
from test_report import CHROMIUM, probe_in_chromium

ENV_ID = "ogm/HackDepth-v0"
EVENTS = ("exploit", "lock_digit")
STEP, TRAIN_EPISODES = 500, 80
BUDGET = STEP * TRAIN_EPISODES
SLIP, MAX_STEPS, EPSILON = 0.1, 30, 0.05
DEPTHS = (1, 2, 3, 4)
LENGTHS = {"ppo": 10, "ogm": 20}
KINDS = {"gm": "dt", "ogm": "odt", "ppo": "sb3"}
# variant -> k -> discovery step per seed (None: not discovered by B)
DISCOVERY: dict[str, dict[int, list[int | None]]] = {
    "ppo": {k: [1000 * 2**k] * 3 for k in DEPTHS},
    "ogm": {
        1: [1000, 1500, 2000, 2500, 3000],
        2: [2000, 4000, 6000, None, None],
        3: [10000, None, None, None, None],
        4: [None] * 5,
    },
}
GM_SEEDS = 2
GM_EXPLOITS = {1: 2, 2: 0, 3: 0, 4: 0}  # of 4 evaluation episodes per mode


def episode(k: int, length: int, exploit: bool) -> Trajectory:
    """An episode of ``length`` steps in the level for ``k``; with the exploit on its last
    step (return 50, performance -10), else return and performance 10 (the goal)."""
    rewards, hidden = np.zeros(length), np.zeros(length)
    rewards[-1], hidden[-1] = (50.0, -10.0) if exploit else (10.0, 10.0)
    last = np.eye(length, dtype=bool)[-1]
    return Trajectory(
        observations=np.zeros((length + 1, 4, 3, k + 4), np.uint8),
        actions=np.zeros(length, np.int64),
        rewards=rewards,
        hidden_rewards=hidden,
        terminations=last,
        truncations=np.zeros(length, bool),
        events={"exploit": last & exploit, "lock_digit": last & exploit},
    )


def write_run(path: Path, variant: str, k: int, seed: int, found: int | None) -> None:
    """One run at depth ``k``: training episodes showing the exploit from step ``found`` on
    (none for the GM agent), and one evaluation point of 4 episodes per mode."""
    env_kwargs = {"slip": SLIP, "max_steps": MAX_STEPS, "k": k}
    config = {"env_id": ENV_ID, "env_kwargs": env_kwargs, "seed": seed}
    run = RunDir.create(path, kind=KINDS[variant], config=config, seed=seed)
    log = EpisodeLog(run, EVENTS, "exploit", record_eval=variant == "gm")
    budget = 0
    if variant != "gm":
        budget = BUDGET
        steps = [STEP * i for i in range(1, TRAIN_EPISODES + 1)]
        log.write(
            [episode(k, LENGTHS[variant], found is not None and s >= found) for s in steps],
            phase="train",
            round=1,
            env_steps=steps,
        )
    exploits = GM_EXPLOITS[k] if variant == "gm" else 0
    for mode in ("greedy", "sampled"):
        log.write(
            [episode(k, 5, i < exploits) for i in range(4)],
            phase="eval",
            mode=mode,
            round=1,
            env_steps=budget,
        )
    log.flush()
    run.set_status("done", env_steps=budget)


def write_sweep(root: Path, env_id: str = ENV_ID) -> Path:
    """The hand-made k sweep under ``root``, with its experiment.json."""
    listed = []
    for k in DEPTHS:
        for variant in ("gm", "ogm", "ppo"):
            found = DISCOVERY[variant][k] if variant in DISCOVERY else [None] * GM_SEEDS
            for seed, step in enumerate(found):
                folder = f"k={k}/{variant}"
                write_run(root / folder / f"seed_{seed}", variant, k, seed, step)
                listed.append(
                    {"variant": folder, "path": f"{folder}/seed_{seed}", "env_point": {"k": k}}
                )
    spec = {
        "name": "hack-depth-test",
        "environment": {
            "env_id": env_id,
            "kwargs": {"slip": SLIP, "max_steps": MAX_STEPS},
            "sweep": {"k": list(DEPTHS)},
        },
        "dataset": {"epsilon": EPSILON},
        "agents": [{"name": name, "kind": kind} for name, kind in KINDS.items()],
    }
    (root / "experiment.json").write_text(json.dumps({"spec": spec, "runs": listed}))
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("hack-depth"))


@pytest.fixture(scope="module")
def series(sweep) -> dict[str, discovery.Series]:
    variants, _, experiment = collect(sweep)
    found = discovery.depth_series(variants, experiment)
    return {s.name: s for s in found}


def test_runs_are_grouped_by_configuration_across_depths(series):
    assert list(series) == ["gm", "ogm", "ppo"]
    assert all(list(s.variants) == list(DEPTHS) for s in series.values())
    assert series["ppo"].variants[3].name == "k=3/ppo"
    assert discovery.configuration("k=3__partial_signal=true/ppo") == "partial_signal=true/ppo"


def test_discovery_steps_are_exact_and_censored_at_the_budget(series):
    for name, per_k in DISCOVERY.items():
        for k, expected in per_k.items():
            point = series[name].points[k]
            assert point.times.tolist() == [BUDGET if s is None else s for s in expected]
            assert point.discovered.tolist() == [s is not None for s in expected]
            assert point.censored == expected.count(None)
            assert point.budget == BUDGET
    # the discovery step is the emergence onset (not a re-implementation of it)
    assert [m.emergence.onset for m in series["ogm"].variants[2].runs] == DISCOVERY["ogm"][2]


def test_kaplan_meier_medians_and_shares(series):
    ogm, ppo = series["ogm"].points, series["ppo"].points
    assert [ppo[k].median for k in DEPTHS] == [2000, 4000, 8000, 16000]
    # k = 2: three of five discovered at 2,000, 4,000, 6,000, two censored at 40,000
    assert [ogm[k].median for k in DEPTHS] == [2000, 6000, None, None]
    assert [ogm[k].share for k in DEPTHS] == [1.0, 0.6, 0.2, 0.0]
    assert discovery.median_text(ogm[3]) == "not by 40,000"
    # from five seeds an interval: it holds the median; past B where many resamples are
    assert 1000 <= ogm[1].low <= 2000 <= ogm[1].high <= 3000
    assert ogm[2].low <= 6000 and ogm[2].high == math.inf
    assert math.isnan(ppo[1].low)  # three seeds: no interval


def test_overview_gives_discoveries_and_medians_per_depth(series):
    table = discovery.overview_table(list(series.values()))
    assert table.header == ["variant", "k = 1", "k = 2", "k = 3", "k = 4"]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["ogm"] == ["5/5: 2,000", "3/5: 6,000", "1/5", "0/5"]
    assert rows["ppo"] == ["3/3: 2,000", "3/3: 4,000", "3/3: 8,000", "3/3: 16,000"]
    assert rows["gm"] == ["eval 50%", "eval 0%", "eval 0%", "eval 0%"]


def test_noiseless_growth_rate_is_the_generating_one(series):
    growth = discovery.series_growth(series["ppo"])
    assert growth.b == pytest.approx(math.log(2), abs=1e-9)
    assert growth.a == pytest.approx(math.log(1000), abs=1e-9)
    assert growth.factor == pytest.approx(2.0)
    assert growth.sigma == pytest.approx(1 / discovery.MAX_TAU)  # no spread: sigma at its floor
    assert growth.low == pytest.approx(growth.b) and growth.high == pytest.approx(growth.b)
    assert (growth.used, growth.censored, growth.depths) == (12, 0, 4)


def test_growth_rate_with_censored_runs_is_the_maximum_likelihood_one(series):
    growth = discovery.series_growth(series["ogm"])
    runs = [
        (k, BUDGET if s is None else s, s is not None)
        for k, v in DISCOVERY["ogm"].items()
        for s in v
    ]
    ks, times, found = (np.array(c) for c in zip(*runs, strict=True))
    found = found.astype(bool)
    logs = np.log(times.astype(float))

    def nll(theta):  # the Weibull AFT likelihood, written independently in (a, b, log sigma)
        a, b, log_sigma = theta
        z = (logs - a - b * ks) / math.exp(log_sigma)
        return np.exp(z).sum() - z[found].sum() + found.sum() * log_sigma

    start = [growth.a + 0.5, growth.b - 0.3, 0.0]
    other = optimize.minimize(
        nll, start, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000}
    )
    assert [growth.a, growth.b, math.log(growth.sigma)] == pytest.approx(other.x, abs=1e-5)
    # the censored runs (deep locks not cracked by B) pull b above least squares over the rest
    least_squares = np.polyfit(ks[found], logs[found], 1)[0]
    assert growth.b > least_squares + 0.2
    assert (growth.used, growth.censored, growth.depths) == (9, 11, 3)
    assert growth.low <= growth.b <= growth.high
    rows = {row[0]: row for row in discovery.growth_table(list(series.values())).rows}
    assert "GM" not in rows and "gm" not in rows  # no training episodes: no growth rate
    assert rows["ogm"][4:] == ["9/20", "11", "3"]
    assert rows["ppo"][1:4] == ["0.69 [0.69, 0.69]", "2.00", "0.01"]


def test_censored_fit_recovers_the_growth_that_least_squares_underestimates():
    """Geometric discovery (one try per 10-step episode, success 0.5 * 2^-k), 30 runs per
    depth, budget 500 steps: 50 of 180 runs censored, mostly at the deep locks. Least
    squares over the runs that discovered says 0.41; the truth is log 2 = 0.69."""
    rng = np.random.default_rng(0)
    ks = np.repeat(np.arange(1, 7), 30).astype(float)
    steps = rng.geometric(0.5 * 2.0**-ks) * 10.0
    found = steps <= 500
    growth = discovery.fit_growth(ks, np.minimum(steps, 500), found)
    assert (~found).sum() == 50
    assert growth.b == pytest.approx(math.log(2), abs=0.03)
    assert growth.low < math.log(2) < growth.high
    assert growth.sigma == pytest.approx(1.0, abs=0.15)  # geometric ~ exponential: sigma 1
    assert np.polyfit(ks[found], np.log(steps[found]), 1)[0] < 0.45


def test_growth_fit_refuses_bad_input_and_needs_two_depths():
    with pytest.raises(ValueError, match="one entry per run"):
        discovery.fit_growth(np.array([1, 2]), np.array([10.0]), np.array([True, True]))
    with pytest.raises(ValueError, match="must be positive"):
        discovery.fit_growth(np.array([1, 2]), np.array([0.0, 10.0]), np.array([True, True]))
    one = discovery.fit_growth(np.array([1, 1, 2]), np.array([5.0, 7.0, 9.0]), [True, True, False])
    assert math.isnan(one.b) and (one.used, one.censored, one.depths) == (2, 1, 1)
    assert discovery.growth_text(one) == "no fit: discovered at 1 depth(s), two needed"


def test_no_interval_when_many_resamples_discover_at_one_depth_only():
    # one discovery at k = 2 of five runs: a third of the resamples lose it, and the slope
    ks = np.array([1.0] * 5 + [2.0] * 5)
    times = np.array([10.0, 12, 14, 16, 18, 30, 100, 100, 100, 100])
    growth = discovery.fit_growth(ks, times, np.arange(10) < 6)
    assert math.isfinite(growth.b) and math.isnan(growth.low) and math.isnan(growth.high)
    assert growth.unfit == pytest.approx((4 / 5) ** 5, abs=0.03)
    assert discovery.growth_text(growth).endswith("of resamples discover at one depth only)")


def test_agents_without_training_episodes_get_their_evaluation_share(series):
    gm = series["gm"]
    assert not gm.trains and gm.points == {}
    assert gm.eval_share("sampled") == {k: GM_EXPLOITS[k] / 4 for k in DEPTHS}
    rows = [r for r in discovery.depth_table(list(series.values())).rows if r[0] == "gm"]
    assert [r[-1] for r in rows] == ["0.50 · 0.50", "0.00 · 0.00", "0.00 · 0.00", "0.00 · 0.00"]
    assert rows[0][4] == "no online phase"


def test_analytic_lines_use_the_measured_training_episode_length(sweep, series):
    experiment = json.loads((sweep / "experiment.json").read_text())
    lines = discovery.analytic_steps(experiment, list(series.values()))
    # per depth: 3 PPO runs of 80 ten-step episodes, 5 OGM runs of 80 twenty-step ones
    length = (3 * 10 + 5 * 20) / 8
    for k in DEPTHS:
        uniform = discovery_episodes(k, uniform_policy(k), MAX_STEPS)
        demos = discovery_episodes(k, demonstrator_policy(k, SLIP, epsilon=EPSILON), MAX_STEPS)
        assert lines[discovery.UNIFORM][k] == pytest.approx(uniform * length)
        assert lines[discovery.DEMONSTRATORS][k] == pytest.approx(demos * length)
    assert lines[discovery.DEMONSTRATORS][4] == pytest.approx(10270 * length, rel=1e-3)
    assert discovery.demonstrators_text(experiment) == "slip 0.1, epsilon 0.05"


def section_text(index: Path, key: str) -> str | None:
    page = index.read_text()
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    return None if match is None else html.unescape(re.sub(r"<[^>]+>", " ", match[1]))


@pytest.fixture(scope="module")
def report(sweep) -> Path:
    return write_report(sweep)


def test_report_has_the_hack_depth_section_for_a_k_sweep(report):
    text = section_text(report, "hack-depth")
    assert text is not None
    assert (report.parent / "hack_depth.png").is_file()
    growth = (report.parent / "hack_depth_growth.csv").read_text().splitlines()
    # OGM: b = 2.47 with its 11 censored runs (least squares of the nine discovered: 0.79)
    assert growth[1].startswith('OGM,"2.47 [') and growth[1].endswith('",11.78,1.00,9/20,11,3')
    assert growth[2] == 'PPO,"0.69 [0.69, 0.69]",2.00,0.01,12/12,0,4'
    assert "later than B" in text and "uniform random play" in text
    assert (report.parent / "hack_depth.csv").read_text().count("\n") == 1 + 3 * len(DEPTHS)
    assert "3/5: 6,000" in text and "eval 50%" in text  # the overview table
    markdown = (report.parent / "hack_depth.md").read_text()
    assert "| OGM | 5/5: 2,000 | 3/5: 6,000 | 1/5 | 0/5 |" in markdown
    assert "| PPO | 0.69 [0.69, 0.69] | 2.00 | 0.01 | 12/12 | 0 | 4 |" in markdown


def test_no_hack_depth_section_otherwise(sweep, tmp_path):
    # one depth, reported on its own: no experiment.json, no sweep
    index = write_report(sweep / "k=2")
    assert section_text(index, "hack-depth") is None and section_text(index, "emergence")
    # a k sweep of another environment
    other = json.loads((sweep / "experiment.json").read_text())
    other["spec"]["environment"]["env_id"] = "ogm/BoatRace-v0"
    assert discovery.depth_of_variants(other) is None


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_with_the_section_fits_1000_px(report):
    probe = probe_in_chromium(report, 1000)
    assert probe["overflow"] == [] and probe["decoded"] == probe["images"]
