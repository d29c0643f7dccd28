"""Run directories: the one place every agent writes its config, metrics and checkpoints.

Layout of a run directory::

    run.json          kind, resolved config, seed, package and code versions, status
    episodes.csv      one row per episode (schema in docs/architecture.md)
    rounds.csv        one row per round or update block (free columns)
    tb/               TensorBoard events
    checkpoints/      step_<n>/ {tensors.safetensors, state.json, arrays.npz}; LATEST

Checkpoints are written into a temporary directory and renamed into place, so a run killed
at any moment leaves either the previous or the new checkpoint, never half of one. Each
checkpoint records how many rows the logs had; ``RunDir.resume`` cuts the logs back to
that point so that a resumed run writes the same rows as one never interrupted.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from ogm.data.trajectory import Trajectory

RUN_FILE = "run.json"
EPISODE_COLUMNS = (
    "phase",
    "mode",
    "round",
    "episode",
    "env_steps",
    "return",
    "performance",
    "length",
    "target_return",
)
_PACKAGES = (
    "ogm",
    "numpy",
    "torch",
    "gymnasium",
    "minari",
    "safetensors",
    "stable-baselines3",
    "scipy",
    "pydantic",
)


class RunDirError(RuntimeError):
    """A run directory or checkpoint that cannot be used, with the reason."""


# ----------------------------------------------------------------------------- versions


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide a run's numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_version() -> str:
    """The git commit of the ogm source (``+dirty`` when modified), or ``unknown``."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- atomic files


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_ready(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- state packing


def pack_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure (e.g. an optimiser ``state_dict``) into tensors and JSON.

    Every tensor is replaced by ``{"__tensor__": key}`` in the returned skeleton; the
    tensors come back under those keys, ready for safetensors. Inverse: ``unpack_state``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous().clone()
            return {"__tensor__": path}
        if isinstance(node, Mapping):
            return {
                "__dict__": [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")]
                    for i, (k, v) in enumerate(node.items())
                ]
            }
        if isinstance(node, list | tuple):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
            return {"__tuple__": items} if isinstance(node, tuple) else items
        if isinstance(node, float) and not math.isfinite(node):
            return {"__float__": repr(node)}
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(
            f"cannot store a {type(node).__name__} at {path or '<root>'} in a checkpoint"
        )

    return tensors, walk(obj, prefix or "state")


def unpack_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild the structure that ``pack_state`` split."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {
                unpack_state(k, tensors): unpack_state(v, tensors) for k, v in skeleton["__dict__"]
            }
        if "__tuple__" in skeleton:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    return skeleton


def torch_rng_state() -> dict[str, torch.Tensor]:
    """The global torch RNG states (CPU, and CUDA when present) as tensors."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def set_torch_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    """Restore what ``torch_rng_state`` captured."""
    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """What a checkpoint holds: tensors, JSON state and plain numpy arrays."""

    path: Path
    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    arrays: dict[str, np.ndarray]


def save_checkpoint(
    directory: Path,
    step: int,
    *,
    tensors: Mapping[str, torch.Tensor] | None = None,
    state: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically and point ``LATEST`` at it.

    ``tensors`` go to safetensors, ``state`` to JSON, ``arrays`` to an npz without pickle.
    Only the newest ``keep`` checkpoints are kept.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}."))
    try:
        cpu = {k: v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}
        save_file(_unshare(cpu), tmp / "tensors.safetensors")
        for k, v in (arrays or {}).items():
            if np.asarray(v).dtype == object:
                raise TypeError(f"array {k!r} has dtype object, which would need pickle")
        np.savez(tmp / "arrays.npz", **{k: np.asarray(v) for k, v in (arrays or {}).items()})
        payload = {"step": step, "state": _json_ready(dict(state or {}))}
        (tmp / "state.json").write_text(json.dumps(payload, indent=1, allow_nan=False))
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(directory / "LATEST", name + "\n")
    for old in sorted(directory.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; copy every repeated storage."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in tensors.items():
        key = (
            (v.untyped_storage().data_ptr(), v.untyped_storage().nbytes())
            if v.numel()
            else (0, id(v))
        )
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint ``LATEST`` points at, or ``None`` when there is none yet."""
    pointer = Path(directory) / "LATEST"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not path.is_dir():
        raise RunDirError(f"{pointer} points at {path.name}, which does not exist")
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint directory (or a run directory's latest one) with clear errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if (path / RUN_FILE).exists() or (path / "checkpoints").is_dir():
        found = latest_checkpoint(path / "checkpoints")
        if found is None:
            raise RunDirError(f"run directory {path} has no checkpoint yet")
        path = found
    if not path.is_dir():
        raise RunDirError(f"no checkpoint at {path}")
    for name in ("tensors.safetensors", "state.json", "arrays.npz"):
        if not (path / name).is_file():
            raise RunDirError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        payload = json.loads((path / "state.json").read_text())
        step, state = int(payload["step"]), payload["state"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"checkpoint {path}/state.json is corrupt: {err}") from err
    try:
        tensors = load_file(path / "tensors.safetensors")
    except (SafetensorError, OSError, ValueError) as err:
        raise RunDirError(f"checkpoint {path}/tensors.safetensors is corrupt: {err}") from err
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise RunDirError(f"checkpoint {path}/arrays.npz is corrupt: {err}") from err
    return Checkpoint(path=path, step=step, tensors=tensors, state=state, arrays=arrays)


# ----------------------------------------------------------------------------- CSV logs


class CsvLog:
    """An append-only CSV table whose header is fixed by its first row (or given)."""

    def __init__(self, path: Path, columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = list(columns) if columns else None
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as handle:
                header = next(csv.reader(handle), None)
            if header:
                if self.columns is not None and header != self.columns:
                    raise RunDirError(f"{self.path} has columns {header}, expected {self.columns}")
                self.columns = header

    @property
    def rows(self) -> int:
        """Complete rows written so far (the header not counted)."""
        if not self.path.exists():
            return 0
        return len(self.read())

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row; keys missing from the header are an error, missing values blank."""
        self.extend([row])

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows in one write."""
        rows = list(rows)
        if not rows:
            return
        if self.columns is None:
            self.columns = list(rows[0])
        unknown = set().union(*rows) - set(self.columns)
        if unknown:
            raise RunDirError(f"{self.path.name} has no columns {sorted(unknown)}")
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)

    def read(self) -> list[dict[str, str]]:
        """All complete rows as dicts of strings (a half-written last line is ignored)."""
        if not self.path.exists():
            return []
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(text.splitlines()))

    def truncate(self, rows: int) -> None:
        """Keep the header and the first ``rows`` rows: what a checkpoint had seen."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]
        atomic_write_text(self.path, "".join(lines[: 1 + rows]) if rows or lines else "")


def _csv_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def episode_row(
    trajectory: Trajectory,
    *,
    phase: str,
    mode: str,
    round: int,
    episode: int,
    env_steps: int,
    event_names: Sequence[str],
    target_return: float = float("nan"),
) -> dict[str, Any]:
    """One episodes.csv row for a finished episode, with every event's count and share.

    ``phase`` is ``train`` (an episode the agent acted in while learning) or ``eval``;
    ``mode`` is ``greedy`` (most likely actions) or ``sampled``.
    """
    if phase not in ("train", "eval") or mode not in ("greedy", "sampled"):
        raise ValueError(
            f"episode rows need phase train|eval and mode greedy|sampled, got {phase!r}, {mode!r}"
        )
    row: dict[str, Any] = {
        "phase": phase,
        "mode": mode,
        "round": round,
        "episode": episode,
        "env_steps": env_steps,
        "return": trajectory.ret,
        "performance": trajectory.performance,
        "length": trajectory.length,
        "target_return": float(target_return),
    }
    for name in event_names:
        flags = trajectory.events.get(name)
        count = int(flags.sum()) if flags is not None else 0
        row[f"ev_{name}"] = count
        row[f"ev_{name}_share"] = count / trajectory.length
    return row


def episode_columns(event_names: Sequence[str]) -> list[str]:
    """The episodes.csv header for a game with these events."""
    columns = list(EPISODE_COLUMNS)
    for name in event_names:
        columns += [f"ev_{name}", f"ev_{name}_share"]
    return columns


# ----------------------------------------------------------------------------- run directory


class RunDir:
    """A run's directory: its record, its logs and its checkpoints."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = Path(path)
        self.record = record
        self.checkpoints = self.path / "checkpoints"
        self.rounds = CsvLog(self.path / "rounds.csv")
        self._episodes: CsvLog | None = None
        self._tb = None

    # -- creation
    @classmethod
    def create(cls, path: Path, *, kind: str, config: Any, seed: int) -> RunDir:
        """Start a new run directory (an error if ``path`` already holds a run)."""
        path = Path(path)
        if (path / RUN_FILE).exists():
            raise RunDirError(f"{path} already holds a run; resume it or choose another directory")
        path.mkdir(parents=True, exist_ok=True)
        record = {
            "kind": kind,
            "seed": seed,
            "config": _json_ready(config),
            "versions": package_versions(),
            "code_version": code_version(),
            "status": "running",
            "created": _now(),
        }
        run = cls(path, record)
        run._write_record()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory."""
        path = Path(path)
        file = path / RUN_FILE
        if not file.exists():
            raise RunDirError(f"{path} is not a run directory: {RUN_FILE} is missing")
        try:
            record = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise RunDirError(f"{file} is corrupt: {err}") from err
        for key in ("kind", "config", "seed", "status"):
            if key not in record:
                raise RunDirError(f"{file} lacks {key!r}")
        return cls(path, record)

    @classmethod
    def open_or_create(cls, path: Path, *, kind: str, config: Any, seed: int) -> RunDir:
        """Open the run at ``path`` if it is this same run, else create it.

        An existing run with another kind or config is an error, so that a changed config
        never silently continues an old run.
        """
        if not (Path(path) / RUN_FILE).exists():
            return cls.create(path, kind=kind, config=config, seed=seed)
        run = cls.open(path)
        wanted = _json_ready(config)
        if run.kind != kind or run.config != wanted:
            changed = sorted(
                k for k in set(wanted) | set(run.config) if wanted.get(k) != run.config.get(k)
            )
            raise RunDirError(
                f"{path} holds a different run (kind {run.kind!r}; differing config keys "
                f"{changed}); use a new directory"
            )
        return run

    # -- record
    @property
    def kind(self) -> str:
        return self.record["kind"]

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    @property
    def seed(self) -> int:
        return int(self.record["seed"])

    @property
    def status(self) -> str:
        return self.record["status"]

    def set_status(self, status: str, **extra: Any) -> None:
        """Record ``running``, ``done`` or ``failed`` (with any extra fields)."""
        self.record.update(status=status, updated=_now(), **_json_ready(extra))
        self._write_record()

    def _write_record(self) -> None:
        atomic_write_text(self.path / RUN_FILE, json.dumps(self.record, indent=2, allow_nan=False))

    # -- logs
    def episodes(self, event_names: Sequence[str]) -> CsvLog:
        """The episodes.csv log with the columns for these event names."""
        if self._episodes is None:
            self._episodes = CsvLog(self.path / "episodes.csv", episode_columns(event_names))
        return self._episodes

    def tensorboard(self):
        """A TensorBoard ``SummaryWriter`` writing under ``tb/``."""
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- checkpoints
    def save_checkpoint(
        self,
        step: int,
        *,
        tensors: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Checkpoint the run; also records how many log rows belong to this point."""
        log_rows = {"episodes": self._log("episodes.csv").rows, "rounds": self.rounds.rows}
        state = {**(state or {}), "_log_rows": log_rows}
        if self._tb is not None:
            self._tb.flush()
        return save_checkpoint(self.checkpoints, step, tensors=tensors, state=state, arrays=arrays)

    def resume(self) -> Checkpoint | None:
        """Load the latest checkpoint and cut the logs back to it.

        Returns ``None`` (and empties the logs) when the run has no checkpoint yet, so the
        caller starts from scratch.
        """
        path = latest_checkpoint(self.checkpoints)
        checkpoint = load_checkpoint(path) if path is not None else None
        rows = checkpoint.state.get("_log_rows", {}) if checkpoint else {}
        self._log("episodes.csv").truncate(int(rows.get("episodes", 0)))
        self.rounds.truncate(int(rows.get("rounds", 0)))
        return checkpoint

    def _log(self, name: str) -> CsvLog:
        if name == "episodes.csv" and self._episodes is not None:
            return self._episodes
        return CsvLog(self.path / name)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
