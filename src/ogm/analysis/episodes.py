"""Chosen episodes kept for the report's animations, and turning them into GIFs.

The report re-runs nothing. Instead every agent hands each finished training episode to an
``EpisodeRecorder``, which keeps two of them as small numpy files under ``<run>/episodes/``:

- ``first_event.npz``: the first episode that shows the primary safety event;
- ``last.npz``: the latest episode (written on ``flush``, which agents call when they
  checkpoint and when they finish).

Each file holds plain arrays (no pickle): ``observations (T+1, ...)``, ``actions``,
``rewards``, ``hidden_rewards``, ``event`` (the primary event per step), ``episode`` and
``phase``. A resumed run replays the same episodes, so rewriting these files is harmless.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from ogm.data.trajectory import Trajectory

EPISODES_DIR = "episodes"
FIRST_EVENT = "first_event"
LAST = "last"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EpisodeRecorder:
    """Keeps the first episode with the primary event and the latest one of a run.

    Agents create one per run (``EpisodeRecorder(run_dir, primary_event)``), call
    ``record(trajectory, episode=i, phase=...)`` for every training episode (cheap: it only
    looks at the event flags and keeps a reference) and ``flush()`` at each checkpoint and at
    the end of the run.
    """

    def __init__(self, run_dir: Path | str, primary_event: str | None) -> None:
        self.directory = Path(run_dir) / EPISODES_DIR
        self.primary_event = primary_event
        self._have_first = (self.directory / f"{FIRST_EVENT}.npz").exists()
        self._latest: dict[str, np.ndarray] | None = None

    def _arrays(self, trajectory: Trajectory, episode: int, phase: str) -> dict[str, np.ndarray]:
        flags = trajectory.events.get(self.primary_event) if self.primary_event else None
        return {
            "observations": np.asarray(trajectory.observations),
            "actions": np.asarray(trajectory.actions),
            "rewards": trajectory.rewards,
            "hidden_rewards": trajectory.hidden_rewards,
            "event": np.zeros(trajectory.length, bool) if flags is None else flags,
            "episode": np.array(episode, dtype=np.int64),
            "phase": np.array(phase),
        }

    def record(self, trajectory: Trajectory, *, episode: int, phase: str = "train") -> None:
        """Offer a finished episode (``episode`` numbered as in episodes.csv)."""
        arrays = self._arrays(trajectory, episode, phase)
        self._latest = arrays
        if not self._have_first and arrays["event"].any():
            _save_npz(self.directory / f"{FIRST_EVENT}.npz", arrays)
            self._have_first = True

    def flush(self) -> None:
        """Write the latest recorded episode to ``last.npz``."""
        if self._latest is not None:
            _save_npz(self.directory / f"{LAST}.npz", self._latest)


def load_episode(path: Path) -> dict[str, np.ndarray]:
    """Read a recorded episode (no pickle)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def render_frames(env_id: str, observations: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 pictures of stored observations (delegates to ogm.envs)."""
    from ogm.envs import render_rgb

    return np.asarray(render_rgb(env_id, observations), dtype=np.uint8)


def episode_gif(
    env_id: str, recorded: dict[str, np.ndarray], *, size: int = 240, frame_ms: int = 150
) -> bytes:
    """An animated GIF of a recorded episode, at least ``size`` pixels on its longest side,
    ``frame_ms`` per step (GIF stores durations in 10 ms units).

    A frame reached by a step with the primary event gets a red border, so the behaviour can
    be seen at a glance.
    """
    from PIL import Image

    rgb = render_frames(env_id, recorded["observations"])
    factor = max(1, -(-size // max(rgb.shape[1:3])))  # nearest-neighbour upscaling
    rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)
    # The event of the step that led into frame t (the first frame has none).
    flagged = np.concatenate([[False], recorded["event"].astype(bool)])
    border = 4
    framed = np.full(
        (len(rgb), rgb.shape[1] + 2 * border, rgb.shape[2] + 2 * border, 3), 255, np.uint8
    )
    framed[flagged] = (220, 30, 30)
    framed[:, border:-border, border:-border] = rgb
    frames = [Image.fromarray(frame) for frame in framed]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
    )
    return buffer.getvalue()
