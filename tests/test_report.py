"""The HTML report, built from synthetic run directories written through ogm.train.rundir.

The synthetic runs are exact: training episode ``i`` (1-based) of a run ends at ``100 * i``
env steps and shows the event on 80 of its 100 steps from episode ``onset`` on; evaluation
point ``r`` of ``P`` has known returns in each mode, and only the final point has the event
share the headline must report. So every cell of the report has a reference value.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ogm.analysis import plots
from ogm.analysis.episodes import EpisodeRecorder, load_episode
from ogm.analysis.findings import count_text, span_text
from ogm.analysis.report import (
    MIXED_EVENT,
    SECTIONS,
    ReportError,
    collect,
    config_as_run,
    drift_panels,
    eval_panels,
    fidelity_panels,
    training_panels,
    variant_labels,
    write_report,
)
from ogm.analysis.runs import (
    EVAL,
    GREEDY,
    MODES,
    NO_DEMONSTRATORS,
    NO_SAFE_OPTIMUM,
    SAMPLED,
    TRAIN,
    load_runs,
)
from ogm.data.trajectory import Trajectory
from ogm.envs import GridworldEnv
from ogm.train.rundir import CsvLog, RunDir, episode_columns

ENV_ID = "ogm/TomatoWatering-v0"
EVENT = "on_transformer"


def random_episode(seed: int, steps: int = 12) -> Trajectory:
    """A real tomato-watering episode of random moves; the event flags come from the env."""
    env = GridworldEnv("tomato_watering", max_steps=steps)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, actions, rewards, hidden, events = [obs], [], [], [], []
    for _ in range(steps):
        action = int(rng.integers(4))
        obs, reward, _, _, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        hidden.append(info["hidden_reward"])
        events.append(info["events"][EVENT])
    flags = np.array(events)
    flags[-3:] = True  # make sure the recorded episode shows the behaviour
    return Trajectory(
        observations=np.stack(observations),
        actions=np.array(actions),
        rewards=np.array(rewards),
        hidden_rewards=np.array(hidden),
        terminations=np.zeros(steps, bool),
        truncations=np.eye(steps, dtype=bool)[-1],
        events={EVENT: flags},
        source="online",
    )


FIDELITY_TARGETS = (10.0, 20.0, 30.0)


def write_synthetic_run(
    path: Path,
    *,
    kind: str,
    seed: int,
    onset: int | None,
    train_episodes: int = 320,
    eval_points: int = 4,
    eval_episodes: int = 10,
    sampled_events: int = 3,
    env_id: str = ENV_ID,
    events: tuple[str, ...] = (EVENT,),
    fidelity: bool = False,
    shift: float = 0.0,
    config: dict | None = None,
) -> None:
    """A run in the episodes.csv schema of docs/architecture.md (module docstring: values).

    Without training episodes it is a reference agent evaluated at env_steps 0.
    """
    config = {"env_id": env_id, "seed": seed, "kind": kind, **(config or {})}
    run = RunDir.create(path, kind=kind, config=config, seed=seed)
    log = run.episodes(events)
    recorder = EpisodeRecorder(path, EVENT)
    episode = 0

    def append(phase: str, mode: str, round: int, env_steps: int, ret, perf, count) -> None:
        nonlocal episode
        row = {"phase": phase, "mode": mode, "round": round, "episode": episode}
        row |= {"env_steps": env_steps, "return": ret, "performance": perf, "length": 100}
        row |= {"target_return": 20.0}
        for name in events:
            row |= {f"ev_{name}": count, f"ev_{name}_share": count / 100}
        log.append(row)
        episode += 1

    per_round = train_episodes // eval_points if train_episodes else 0
    for r in range(1, eval_points + 1):
        if kind == "odt":  # OGM runs log their drift from the offline policy per round
            run.rounds.append(
                {"round": r, "env_steps": 100 * r * per_round}
                | {"kl_offline_demo": 0.01 * r + seed, "kl_offline_online": 0.02 * r}
            )
        for i in range((r - 1) * per_round + 1, r * per_round + 1):
            count = 80 if onset is not None and i >= onset else 0
            append(TRAIN, SAMPLED, r, 100 * i, 10 + 0.5 * count, 10 - 0.1 * count, count)
            if i in (onset, train_episodes):  # as the agents do, for the animations
                recorder.record(random_episode(seed * 1000 + i), episode=episode, phase=TRAIN)
        steps = 100 * r * per_round
        for _ in range(eval_episodes):
            append(EVAL, GREEDY, r, steps, 20 + r + seed + shift, 20 + r, 0)
        for j in range(eval_episodes):  # only the final point has the share to report
            count = 50 if r < eval_points or j < sampled_events else 0
            append(EVAL, SAMPLED, r, steps, 10 + r + seed + shift, 10 + r, count)
    if not train_episodes:  # agents that never act while learning record evaluation episodes
        recorder.record(random_episode(seed), episode=episode - 1, phase=EVAL)
    recorder.flush()
    if fidelity:
        table = CsvLog(
            path / "fidelity.csv", ["target", "mode", "episode", "return", "performance"]
        )
        for mode, slope in ((GREEDY, 0.5), (SAMPLED, 0.4)):
            for target in FIDELITY_TARGETS:
                for j in range(4):
                    achieved = slope * target + seed
                    table.append(
                        {"target": target, "mode": mode, "episode": j, "return": achieved}
                        | {"performance": achieved}
                    )
    run.set_status("done")


ONSETS = {"ogm": [100, 150, None], "ppo": [30, 32, 34, 36, 38]}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for seed, onset in enumerate(ONSETS["ogm"]):
        write_synthetic_run(
            root / "ogm" / f"seed_{seed}", kind="odt", seed=seed, onset=onset, fidelity=True
        )
    for seed, onset in enumerate(ONSETS["ppo"]):
        write_synthetic_run(root / "ppo" / f"seed_{seed}", kind="sb3", seed=seed, onset=onset)
    for seed in range(3):
        write_synthetic_run(
            root / "gm" / f"seed_{seed}",
            kind="dt",
            seed=seed,
            onset=None,
            train_episodes=0,
            eval_points=2,
        )
    return root


class Page(HTMLParser):
    """Per section of an HTML page: its tables (rows of cell texts), images and text.

    A table split into parts (``<div class="split" data-keys="k">``) reads as one table:
    each later part's rows extend the first part's, without the ``k`` key cells it repeats.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.images: dict[str, list[str]] = {}
        self.text: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._keys: int | None = None  # inside a split table: the key cells of each part
        self._part = self._row = self._column = 0

    @property
    def section(self) -> str:
        return self.sections[-1] if self.sections else ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            self.images.setdefault(self.section, []).append(attrs["src"])
        elif tag == "div" and "split" in (attrs.get("class") or ""):
            self._keys, self._part = int(attrs["data-keys"]), -1
            self.tables.setdefault(self.section, []).append([])
        elif tag == "table":
            if self._keys is None:
                self.tables.setdefault(self.section, []).append([])
            self._part, self._row = self._part + 1, -1
        elif tag == "tr":
            self._row, self._column = self._row + 1, 0
            if self._keys is None or self._part == 0:
                self.tables[self.section][-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).replace("\xa0", " ").strip()
            self._cell, self._column = None, self._column + 1
            table = self.tables[self.section][-1]
            if self._keys is None or self._part == 0:
                table[-1].append(text)
            elif self._column > self._keys:  # a later part: skip the key cells it repeats
                table[self._row].append(text)
        elif tag == "div" and self._keys is not None and self._part >= 0:
            self._keys = None

    def handle_data(self, data):
        self.text[self.section] = self.text.get(self.section, "") + data
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str, index: int = 0) -> dict[str, dict[str, str]]:
        """A table as {first cell of a row: {column: cell}}."""
        header, *rows = self.tables[section][index]
        return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def findings_rows(page: Page) -> dict[str, dict[str, str]]:
    """The rows of every game's findings table, by variant."""
    return {
        k: v
        for i in range(len(page.tables["findings"]))
        for k, v in page.table("findings", i).items()
    }


def read_page(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text())
    return page


@pytest.fixture(scope="module")
def report(runs_dir) -> tuple[Path, Page]:
    index = write_report(runs_dir)
    return index, read_page(index)


def test_findings_come_first_and_every_image_exists(report):
    index, page = report
    assert index == index.parent.parent / "report" / "index.html"
    # hack-depth: k sweeps only; overoptimisation: runs that log kl_to_init (these do not)
    assert page.sections == [s for s in SECTIONS if s not in ("hack-depth", "overoptimisation")]
    assert page.sections[0] == "findings" and "findings" not in page.images
    images = [src for srcs in page.images.values() for src in srcs]
    for name in ("eval_curves", "training_curves", "drift", "reached", "frontier", "fidelity"):
        assert f"{name}.png" in images
    # Every variant records a first-event and a last episode (gm: evaluation episodes).
    assert sorted(src for src in images if src.endswith(".gif")) == [
        "episodes/gm__seed_0__first_event.gif",
        "episodes/gm__seed_0__last.gif",
        "episodes/ogm__seed_0__first_event.gif",
        "episodes/ogm__seed_0__last.gif",
        "episodes/ppo__seed_0__first_event.gif",
        "episodes/ppo__seed_0__last.gif",
    ]
    for src in images:
        with Image.open(index.parent / src) as image:
            assert image.size[0] > 100
            if src.endswith(".gif"):  # 12 steps + the first observation, 150 ms each
                durations = []  # (Pillow merges identical consecutive frames)
                for frame in range(image.n_frames):
                    image.seek(frame)
                    durations.append(image.info["duration"])
                assert image.n_frames > 1 and sum(durations) == 13 * 150


def test_headline_reports_the_final_evaluation_point_per_mode(report):
    _, page = report
    table = page.table("findings")
    assert list(table) == ["GM", "OGM", "PPO"]  # path order without experiment.json
    ogm = table["OGM"]
    # Training episodes show the event in 2 of 3 runs, greedy evaluation never; sampled
    # evaluation in every episode of earlier points but 3 of 10 at the final one.
    assert ogm[f"{EVENT} share, greedy eval"] == "0.00 · 0.00 · 0.00"
    assert ogm[f"{EVENT} share, sampled eval"] == "0.30 · 0.30 · 0.30"
    assert ogm["return, greedy eval"] == "24.00 · 25.00 · 26.00"  # 20 + 4 points + seed
    assert ogm["return, sampled eval"] == "14.00 · 15.00 · 16.00"
    assert ogm["performance, greedy eval"] == "24.00 · 24.00 · 24.00"
    assert ogm[f"showed {EVENT} in training (runs, by B)"] == "2/3 runs by 32,000"
    # the runs name no demonstration dataset: no gap closed, and the cell says why
    assert ogm["gap closed, greedy eval"] == ogm["gap closed, sampled eval"] == NO_DEMONSTRATORS
    assert ogm["eval episodes per mode"] == "10" and ogm["budget B (env steps)"] == "32,000"
    # the answers come before what was run
    header = list(ogm)
    assert header.index("return, sampled eval") < header.index("kind") < header.index("seeds")


def test_times_are_env_steps_and_a_time_not_reached_reads_not_by_b(report):
    _, page = report
    ogm = page.table("findings")["OGM"]
    # onset at episode 100 / 150; t50 when 10 of the last 20 show it; t90 when 18 do.
    assert ogm["onset"] == "10,000 · 15,000 · not by 32,000"
    assert ogm["t50"] == "10,900 · 15,900 · not by 32,000"
    assert ogm["t90"] == "11,700 · 16,700 · not by 32,000"
    emergence = page.table("emergence")
    assert list(emergence) == ["OGM", "PPO"]  # gm has no online phase
    assert [emergence["OGM"][k] for k in ("showed by B", "t10 by B", "t90 by B")] == ["2/3"] * 3
    assert emergence["OGM"]["decisiveness"] == "1,600 · 1,600 · not by 32,000"
    assert emergence["OGM"]["commitment"] == "0.80 · 0.80 · –"
    assert emergence["PPO"]["t90 by B"] == "5/5"


def test_intervals_only_from_five_seeds(report):
    _, page = report
    table = page.table("findings")
    for name in ("OGM", "GM"):  # 3 seeds: per-seed values, never a "[low, high]"
        assert not any("[" in cell for cell in table[name].values())
    ppo = table["PPO"]  # 5 seeds, all reached: IQM of 3,000 ... 3,800 = 3,400
    assert ppo["onset"].startswith("3,400 [") and ppo["t50"].startswith("4,300 [")
    assert ppo["return, greedy eval"].startswith("26.00 [")
    assert page.table("emergence")["PPO"]["decisiveness"] == "1,600 [1,600, 1,600]"


def test_reference_agents_are_reference_lines_not_censored_runs(report, runs_dir):
    _, page = report
    gm = page.table("findings")["GM"]
    assert gm["onset"] == gm["t90"] == "no online phase"
    assert gm[f"showed {EVENT} in training (runs, by B)"] == "no online phase"
    assert gm["return, greedy eval"] == "22.00 · 23.00 · 24.00"  # its final point (round 2)
    assert gm["budget B (env steps)"] == "0"
    variants, event, _ = collect(runs_dir)
    greedy_return = eval_panels(variants, event)[0][0]
    assert set(greedy_return.curves) == {"OGM", "PPO"}
    assert greedy_return.references == {"GM": 23.0}
    np.testing.assert_allclose(greedy_return.curves["OGM"].x, [8000, 16000, 24000, 32000])
    np.testing.assert_allclose(greedy_return.curves["OGM"].value, [22, 23, 24, 25])
    share = training_panels(variants, event, window=20)[2]
    assert set(share.curves) == {"OGM", "PPO"}
    assert share.curves["OGM"].value[-1] == pytest.approx(2 / 3)  # two of three seeds hack
    assert share.curves["OGM"].x[0] >= 2000  # the first full window of 20 episodes


def test_tables_are_written_as_csv_next_to_the_page(report):
    index, page = report
    for name, section in (("findings", "findings"), ("emergence", "emergence")):
        with (index.parent / f"{name}.csv").open(newline="") as handle:
            assert list(csv.reader(handle)) == page.tables[section][0]
    with (index.parent / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 11
    gm0 = next(r for r in rows if r["variant"] == "GM" and r["seed"] == "0")
    assert gm0["onset"] == "no online phase" and gm0["greedy eval: return"] == "22.00"


def test_captions_say_how_it_was_measured(report):
    _, page = report
    for section in ("findings", "eval-curves", "training", "emergence", "frontier"):
        text = page.text[section]
        assert "3–5 seeds per variant" in text
        assert "budget B = 32,000 environment steps" in text
        assert "10 evaluation episodes per mode" in text
    assert "greedy" in page.text["findings"] and "sampled" in page.text["findings"]
    assert "training episodes" in page.text["training"].lower()
    assert "Kaplan-Meier" in page.text["emergence"]


def test_fidelity_per_mode_with_episodes_per_target(runs_dir):
    variants, _, _ = collect(runs_dir)
    panels = fidelity_panels(variants)
    assert list(panels) == [
        "greedy: 4 episodes per target per run",
        "sampled: 4 episodes per target per run",
    ]
    targets, achieved = panels["greedy: 4 episodes per target per run"]["OGM"]
    np.testing.assert_allclose(targets, FIDELITY_TARGETS)
    np.testing.assert_allclose(achieved, 0.5 * targets + np.arange(3)[:, None])


def test_any_folder_of_runs(tmp_path):
    root = tmp_path / "mixed"
    write_synthetic_run(root / "grid" / "seed_0", kind="odt", seed=0, onset=5, train_episodes=40)
    write_synthetic_run(
        root / "cartpole" / "seed_0",
        kind="sb3",
        seed=0,
        onset=None,
        env_id="CartPole-v1",
        events=(),
    )
    write_synthetic_run(
        root / "train_only" / "seed_0",
        kind="odt",
        seed=0,
        onset=5,
        train_episodes=40,
        eval_points=1,
        eval_episodes=0,
    )
    RunDir.create(root / "starting" / "seed_0", kind="odt", config={"env_id": ENV_ID}, seed=0)
    page = read_page(write_report(root))
    assert "fidelity" not in page.sections  # no fidelity.csv: no section
    table = findings_rows(page)  # two tables: CartPole-v1 and tomato_watering
    assert table["cartpole"][f"{EVENT} share, greedy eval"] == "–"
    assert table["cartpole"]["onset"] == "event not logged"
    assert table["cartpole"]["return, greedy eval"] == "24.00"
    assert table["train only"]["return, greedy eval"] == "no eval"
    assert table["train only"]["onset"] == "500"
    assert table["starting"]["onset"] == "no episodes yet"
    variants, event, _ = collect(root)
    greedy_return, _, greedy_share = eval_panels(variants, event)[0]
    assert set(greedy_return.curves) == {"grid", "cartpole"}  # train_only has no eval
    assert set(greedy_share.curves) == {"grid"}  # cartpole does not log the event
    # Runs that log no event at all: returns and performance only.
    only = tmp_path / "only"
    write_synthetic_run(
        only / "cartpole" / "seed_0",
        kind="sb3",
        seed=0,
        onset=None,
        env_id="CartPole-v1",
        events=(),
    )
    page = read_page(write_report(only))
    header = page.tables["findings"][0][0]
    finals = [
        f"{q}, {mode} eval" for q in ("gap closed", "performance", "return") for mode in MODES
    ]
    assert header[:7] == ["variant", *finals]  # and no event share
    assert "No safety event is tracked" in page.text["emergence"]


def test_old_episode_files_are_read_as_train_and_eval(tmp_path):
    path = tmp_path / "old" / "seed_0"
    run = RunDir.create(
        path, kind="dt", config={"env_id": ENV_ID, "eval_deterministic": False}, seed=0
    )
    log = CsvLog(path / "episodes.csv", [c for c in episode_columns([EVENT]) if c != "mode"])
    for phase, steps in (("online", 100), ("online", 200), ("offline_eval", 200)):
        log.append(
            {"phase": phase, "round": 0, "episode": 0, "env_steps": steps, "return": 1.0}
            | {"performance": 1.0, "length": 100, "target_return": 0.0}
            | {f"ev_{EVENT}": 0, f"ev_{EVENT}_share": 0.0}
        )
    run.set_status("done", env_steps=250)
    (old,) = load_runs(tmp_path)
    assert len(old.rows(TRAIN, SAMPLED)["return"]) == 2
    assert len(old.rows(EVAL, SAMPLED)["return"]) == 1  # its config evaluated sampled
    assert old.budget == 250.0  # run.json's env_steps, past the last logged episode


def test_recorder_keeps_first_event_episode(tmp_path):
    recorder = EpisodeRecorder(tmp_path, EVENT)
    safe = random_episode(1)
    safe.events[EVENT][:] = False
    recorder.record(safe, episode=0)
    assert not (tmp_path / "episodes" / "first_event.npz").exists()
    recorder.record(random_episode(2), episode=1)
    recorder.record(random_episode(3), episode=2)
    recorder.flush()
    first = load_episode(tmp_path / "episodes" / "first_event.npz")
    last = load_episode(tmp_path / "episodes" / "last.npz")
    assert int(first["episode"]) == 1 and int(last["episode"]) == 2
    assert first["observations"].shape == (13, *safe.observations.shape[1:])
    # A resumed run's new recorder keeps the first-event file it finds.
    EpisodeRecorder(tmp_path, EVENT).record(random_episode(4), episode=3)
    assert int(load_episode(tmp_path / "episodes" / "first_event.npz")["episode"]) == 1


def test_report_errors_are_clear(tmp_path, runs_dir):
    with pytest.raises(ReportError, match="no run directories"):
        write_report(tmp_path)
    with pytest.raises(
        ReportError,
        match=r"event 'nope' is not in episodes.csv; logged events: \['on_transformer'\]",
    ):
        write_report(runs_dir, event="nope")


# ----------------------------------------------------------------------------- demo-style report

DEMO_SWEEP = {
    "online.strategy": ["percentile:95", "exp_tilted:1"],
    "online.demo_fraction": [0.0, 0.5],
    "online.entropy": [True, False],
}
DEMO_AGENTS = [
    {"name": "gm", "kind": "dt"},
    {"name": "ogm", "kind": "odt", "config": {"pretrained": "@gm"}, "sweep": DEMO_SWEEP},
    {"name": "ppo", "kind": "sb3"},
    {"name": "kl_ppo", "kind": "kl_ppo", "sweep": {"beta": [0.1, 1.0]}},
    {"name": "bc", "kind": "bc"},
    {"name": "filtered_bc", "kind": "bc"},
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """The layout ``ogm run`` writes, with 14 variants: the GM agent, 8 OGM variants (their
    configs start from ``pretrained`` and hold an offline section they never read), PPO far
    from the rest on the frontier, KL-PPO, BC and filtered BC; 2 seeds each."""
    from ogm.experiments.spec import variant_name

    root = tmp_path_factory.mktemp("demo")
    runs = []
    for agent in DEMO_AGENTS:
        sweep = agent.get("sweep", {})
        for values in itertools.product(*sweep.values()):
            variant = variant_name(agent["name"], dict(zip(sweep, values, strict=True)))
            for seed in (0, 1):
                trains = agent["kind"] in ("odt", "sb3", "kl_ppo")
                config = {"pretrained": str(root / "gm" / f"seed_{seed}")} | {
                    "offline": {"updates": 600, "n_layer": 2, "strategy": "percentile:95"}
                }
                write_synthetic_run(
                    root / variant / f"seed_{seed}",
                    kind=agent["kind"],
                    seed=seed,
                    onset=100 if trains else None,
                    train_episodes=320 if trains else 0,
                    eval_points=4 if trains else 1,
                    shift=40.0 if agent["name"] == "ppo" else 0.0,
                    config=config if agent["kind"] == "odt" else None,
                )
                runs.append({"variant": variant, "path": f"{variant}/seed_{seed}"})
    spec = {"name": "demo-style", "description": "synthetic " * 40, "agents": DEMO_AGENTS}
    (root / "experiment.json").write_text(
        json.dumps({"name": "demo-style", "spec": spec, "runs": runs})
    )
    return root


@pytest.fixture(scope="module")
def demo_report(demo_dir) -> tuple[Path, Page]:
    index = write_report(demo_dir)
    return index, read_page(index)


def test_variants_are_named_from_agents_and_sweep_values(demo_report):
    _, page = demo_report
    names = list(page.table("findings"))
    assert names[:2] == ["GM", "OGM percentile:95, demos 0%, entropy on"]
    assert "KL-PPO beta 0.1" in names and names[-2:] == ["BC", "filtered BC"]
    assert len(names) == 14 and not any("__" in n or "=" in n for n in names)
    # without experiment.json the folder names are read the same way
    labels = variant_labels(["ogm__demo_fraction=0.5", "ppo", "runs/x"], None)
    assert labels == {
        "ogm__demo_fraction=0.5": "OGM demos 50%",
        "ppo": "PPO",
        "runs/x": "runs/x",
    }
    # an environment sweep's folders name their point after the variant
    swept = variant_labels(["k=3/gm", "k=3__slip=0.1/ogm__demo_fraction=0.5"], None)
    assert swept == {
        "k=3/gm": "GM (k 3)",
        "k=3__slip=0.1/ogm__demo_fraction=0.5": "OGM demos 50% (k 3, slip 0.1)",
    }


def test_every_variant_gets_its_own_style():
    styles = plots.variant_styles([f"v{i}" for i in range(23)])
    looks = {(s.color, s.linestyle, s.marker) for s in styles.values()}
    assert len(looks) == 23
    assert plots.REFERENCE_LINESTYLE not in {s.linestyle for s in styles.values()}


def test_an_agents_settings_are_shades_of_its_own_hue_from_light_to_dark():
    sizes = {"best_of_n": 1, "ogm": 8, "ogm_feedback": 3, "kl_ppo": 4}
    families = {f"{agent} {i}": agent for agent, n in sizes.items() for i in range(n)}
    styles = plots.variant_styles(list(families), families)
    assert len({(s.color, s.linestyle, s.marker) for s in styles.values()}) == len(families)
    for agent, n in sizes.items():
        colors = np.array([styles[f"{agent} {i}"].color[:3] for i in range(n)])
        others = [s.color for name, s in styles.items() if families[name] != agent]
        assert not {tuple(c) for c in colors} & {tuple(c[:3]) for c in others}
        assert np.all(np.diff(colors.mean(axis=1)) < 0)  # each later setting darker


def test_frontier_zooms_in_when_some_variants_are_far_away():
    near = {f"v{i}": (np.array([10.0 + i, 11.0]), np.array([9.0, 10.0 + i])) for i in range(4)}
    assert plots.far_points(near) == set()
    assert plots.far_points({**near, "PPO": (np.array([48.0]), np.array([4.0]))}) == {"PPO"}
    assert plots.far_points(dict(list(near.items())[:3])) == set()  # too few to tell


def test_configs_show_what_ran(demo_report, demo_dir):
    _, page = demo_report
    text = page.text["configs"]
    assert '"n_layer"' not in text and '"updates": 600' not in text  # the unused offline part
    assert '"strategy": "percentile:95"' in text  # ... but online training reads this key
    shown = config_as_run({"seed": 0, "pretrained": "/r/gm", "offline": {"strategy": "x", "lr": 1}})
    assert shown == {
        "pretrained": "/r/gm",
        "offline": {
            "strategy": "x",
            "(not run)": "pretrained = /r/gm was used instead; see its config",
        },
    }
    assert config_as_run({"seed": 0, "offline": {"lr": 1}}) == {"offline": {"lr": 1}}


def test_drift_from_the_offline_policy_is_plotted_for_ogm_runs(runs_dir):
    variants, _, _ = collect(runs_dir)
    on_demos, on_own = drift_panels(variants)
    assert set(on_demos.curves) == set(on_own.curves) == {"OGM"}  # only OGM runs log it
    np.testing.assert_allclose(on_demos.curves["OGM"].x, [8000, 16000, 24000, 32000])
    np.testing.assert_allclose(
        on_demos.curves["OGM"].value, [1.01, 1.02, 1.03, 1.04]
    )  # mean of 3 seeds
    np.testing.assert_allclose(on_own.curves["OGM"].value, [0.02, 0.04, 0.06, 0.08])


def test_animations_have_a_colour_key_for_each_game(demo_report):
    _, page = demo_report
    gifs = [src for src in page.images["episodes"]]
    assert len(gifs) == 2 * 14  # every variant acts: first event and last episode each
    text = page.text["episodes"]
    for tile in ("floor", "wall", "agent", "dry tomato", "watered tomato", "transformer"):
        assert tile in text


def test_counts_print_as_integers():
    assert count_text(8.0) == "8" and count_text(1_200_000) == "1,200,000"
    assert count_text(0.5) == "0.5"
    assert span_text([8.0, 8.0], as_steps=False) == "8"


def test_mixed_games_and_a_non_gridworld_run_give_a_report(tmp_path):
    root = tmp_path / "mixed"
    write_synthetic_run(root / "tomato" / "seed_0", kind="odt", seed=0, onset=5, train_episodes=40)
    write_synthetic_run(
        root / "sokoban" / "seed_0",
        kind="sb3",
        seed=0,
        onset=10,
        train_episodes=40,
        env_id="ogm/SideEffectsSokoban-v0",
        events=("box_irreversible",),
    )
    write_synthetic_run(  # a Pendulum SAC run: no events, episodes no tile renderer draws
        root / "pendulum" / "seed_0",
        kind="sb3",
        seed=0,
        onset=None,
        env_id="Pendulum-v1",
        events=(),
    )
    index = write_report(root)
    page = read_page(index)
    variants, event, _ = collect(root)
    assert event == MIXED_EVENT
    tracked = {v.name: v.runs[0].event for v in variants}
    assert tracked == {"pendulum": None, "sokoban": "box_irreversible", "tomato": EVENT}
    # one findings table per game setting, each with its own CSV file
    settings = ["Pendulum-v1", "side_effects_sokoban level 0", "tomato_watering level 0"]
    assert [v.setting for v in variants] == settings
    assert len(page.tables["findings"]) == 3
    table = findings_rows(page)
    for i in range(3):
        with (index.parent / f"findings_{i + 1}.csv").open(newline="") as handle:
            assert list(csv.reader(handle)) == page.tables["findings"][i]
    assert table["tomato"]["showed primary event in training (runs, by B)"] == "1/1 runs by 4,000"
    assert table["sokoban"]["onset"] == "1,000"
    assert table["pendulum"]["primary event share, greedy eval"] == "–"
    assert table["pendulum"]["gap closed, greedy eval"] == NO_SAFE_OPTIMUM
    assert "Pendulum-v1" in page.text["episodes"] and "Not animated" in page.text["episodes"]
    assert "box_irreversible (ogm/SideEffectsSokoban-v0)" in page.text["runs"]


# ----------------------------------------------------------------------------- browser check

PROBE = """
<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const width = document.documentElement.clientWidth;
  const overflow = [];
  if (document.documentElement.scrollWidth > width) {
    overflow.push("page is " + document.documentElement.scrollWidth + " px wide");
  }
  document.querySelectorAll("table, img, figure, pre, .wide").forEach((e) => {
    const right = e.getBoundingClientRect().right;
    if (right > width + 0.5) overflow.push(e.tagName + " ends at " + Math.round(right) + " px");
    if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
      overflow.push(e.tagName + " scrolls: " + e.scrollWidth + " > " + e.clientWidth + " px");
    }
  });
  const images = Array.from(document.images);
  const decoded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.probe = JSON.stringify({width, decoded, images: images.length, overflow});
});
</script>
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def probe_in_chromium(index: Path, width: int) -> dict:
    """Open a copy of the report in headless Chromium, ``width`` px wide, every <details>
    open: the window width, images decoded / on the page, and what is wider than the window
    or scrolls sideways."""
    probe = index.parent / "_probe.html"
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--window-size={width},2000",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    probe.unlink()
    match = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert match is not None, result.stderr[-2000:]
    return json.loads(html.unescape(match[1]))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("width", [1000, 1400])
def test_demo_style_report_fits_the_window_with_every_image_decoded(demo_report, width):
    index, page = demo_report
    probe = probe_in_chromium(index, width)
    assert probe["width"] == width
    assert probe["images"] == sum(len(srcs) for srcs in page.images.values()) > 30
    assert probe["decoded"] == probe["images"]
    assert probe["overflow"] == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_probe_sees_overflow(tmp_path):
    index = tmp_path / "index.html"
    index.write_text(
        '<html><body><table><tr><td style="min-width: 1500px">x</td></tr></table></body></html>'
    )
    assert probe_in_chromium(index, 1000)["overflow"] != []


def test_experiment_json_names_the_report(tmp_path, runs_dir):
    root = tmp_path / "copy"
    shutil.copytree(runs_dir, root, ignore=shutil.ignore_patterns("report"))
    (root / "experiment.json").write_text(
        json.dumps({"name": "synthetic", "spec": {"name": "synthetic", "primary_event": EVENT}})
    )
    index = write_report(root)
    assert "<title>ogm report: synthetic</title>" in index.read_text()
