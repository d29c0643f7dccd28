"""The HTML report, built from synthetic run directories written through ogm.train.rundir."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ogm.analysis.episodes import EpisodeRecorder, load_episode
from ogm.analysis.report import SECTIONS, ReportError, write_report
from ogm.data.trajectory import Trajectory
from ogm.envs import GridworldEnv
from ogm.train.rundir import RunDir

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


def write_synthetic_run(
    path: Path,
    *,
    kind: str,
    seed: int,
    onset: int | None,
    episodes: int = 60,
    phase: str = "online",
) -> None:
    """A run whose behaviour switches on (fully) at episode ``onset`` (never when None)."""
    rng = np.random.default_rng(seed)
    run = RunDir.create(
        path, kind=kind, config={"env_id": ENV_ID, "seed": seed, "kind": kind}, seed=seed
    )
    log = run.episodes([EVENT])
    recorder = EpisodeRecorder(path, EVENT)
    rows = []
    for i in range(episodes):
        hacking = onset is not None and i + 1 >= onset + rng.integers(0, 3)
        count = int(rng.integers(60, 100)) if hacking else 0
        ret = 0.56 * count + rng.normal(10, 1)
        perf = 10.0 - 0.1 * count + rng.normal(0, 1)
        rows.append(
            {
                "phase": phase,
                "round": i // 5,
                "episode": i,
                "env_steps": 100 * (i + 1),
                "return": ret,
                "performance": perf,
                "length": 100,
                "target_return": 20.0,
                f"ev_{EVENT}": count,
                f"ev_{EVENT}_share": count / 100,
            }
        )
        if phase == "online" and (hacking or i == episodes - 1):  # as the agents do
            recorder.record(random_episode(seed * 100 + i), episode=i, phase=phase)
    log.extend(rows)
    recorder.flush()
    run.set_status("done")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for seed in range(3):
        write_synthetic_run(root / "ogm" / f"seed_{seed}", kind="odt", seed=seed, onset=20 + seed)
        write_synthetic_run(root / "ppo" / f"seed_{seed}", kind="sb3", seed=seed, onset=5)
        write_synthetic_run(
            root / "bc" / f"seed_{seed}",
            kind="bc",
            seed=seed,
            onset=None,
            episodes=20,
            phase="eval",
        )
    return root


class Page(HTMLParser):
    """Section ids, image sources, tables (rows of cell texts) and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}  # the first table of each section
        self.text: list[str] = []
        self._section = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections.append(self._section)
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table" and self._section not in self.tables:
            self.tables[self._section] = []
        elif tag == "tr" and self.tables.get(self._section) is not None:
            self.tables[self._section].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self._section in self.tables:
            self._section = f"{self._section}:done"
        elif tag in ("td", "th") and self._cell is not None:
            rows = self.tables.get(self._section)
            if rows:
                rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(runs_dir) -> tuple[Path, Page]:
    index = write_report(runs_dir)
    page = Page()
    page.feed(index.read_text())
    return index, page


def test_report_has_every_section_and_every_image_exists(report):
    index, page = report
    assert index == index.parent.parent / "report" / "index.html"
    assert page.sections == list(SECTIONS)
    assert "learning_curves.png" in page.images and "frontier.png" in page.images
    gifs = [src for src in page.images if src.endswith(".gif")]
    # ogm and ppo record a first-event and a last episode; bc (eval only) records none.
    assert sorted(gifs) == [
        "episodes/ogm__seed_0__first_event.gif",
        "episodes/ogm__seed_0__last.gif",
        "episodes/ppo__seed_0__first_event.gif",
        "episodes/ppo__seed_0__last.gif",
    ]
    for src in page.images:
        with Image.open(index.parent / src) as image:
            assert image.size[0] > 100
            if src.endswith(".gif"):  # 12 steps + the first observation, 150 ms each
                durations = []  # (Pillow merges identical consecutive frames)
                for frame in range(image.n_frames):
                    image.seek(frame)
                    durations.append(image.info["duration"])
                assert image.n_frames > 1 and sum(durations) == 13 * 150


def test_emergence_table_values(report):
    _, page = report
    header, *rows = page.tables["emergence"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(table) == {"ogm", "ppo", "bc"}

    def low_value_high(cell: str) -> tuple[float, ...]:
        value, interval = cell.split(" [")
        return (float(value), *map(float, interval.split("]")[0].split(", ")))

    # ppo switches on at episode 5 + U{0, 1, 2}; ogm at 20 + seed + U{0, 1, 2}.
    ppo_onset = low_value_high(table["ppo"]["onset"])
    assert 5 <= ppo_onset[0] <= 7 and ppo_onset[1] <= ppo_onset[0] <= ppo_onset[2]
    assert 20 <= low_value_high(table["ogm"]["onset"])[0] <= 24
    assert low_value_high(table["ogm"]["commitment"])[0] > 0.6  # 60-99 of 100 steps
    # bc never shows the behaviour: censored at its budget of 20 episodes, not dropped.
    assert table["bc"]["onset"] == "20 [20, 20] (3/3 cens.)"
    assert table["bc"]["commitment"] == "n/a"
    assert table["bc"]["runs"] == "3"
    text = " ".join(page.text)
    assert "first episode with the behaviour" in text
    assert '"kind": "odt"' in text  # the configs section shows each variant's config


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


# ----------------------------------------------------------------------------- browser check

IMAGE_CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images", ok + "/" + images.length);
});
</script>
"""


def images_loaded_in_chromium(index: Path) -> str:
    """Open a copy of the report in headless Chromium; returns 'loaded/total' images."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None
    probe = index.parent / "_image_check.html"
    probe.write_text(index.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    probe.unlink()
    marker = 'data-images="'
    assert marker in result.stdout, result.stderr[-2000:]
    start = result.stdout.index(marker) + len(marker)
    return result.stdout[start : result.stdout.index('"', start)]


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium"
)
def test_report_renders_in_headless_chromium_with_every_image_loaded(report):
    index, page = report
    loaded, total = images_loaded_in_chromium(index).split("/")
    assert int(total) == len(page.images) > 0
    assert loaded == total


def test_experiment_json_names_the_report(tmp_path, runs_dir):
    root = tmp_path / "copy"
    shutil.copytree(runs_dir, root, ignore=shutil.ignore_patterns("report"))
    (root / "experiment.json").write_text(
        json.dumps({"name": "synthetic", "spec": {"name": "synthetic", "primary_event": EVENT}})
    )
    index = write_report(root)
    assert "<title>ogm report: synthetic</title>" in index.read_text()
