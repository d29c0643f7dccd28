"""Run directories: the one place every agent writes its config, metrics and checkpoints.

Layout of a run directory::

    run.json          kind, resolved config, seed, package and code versions, compute
                      settings (torch threads, resolved precision), status
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

import contextlib
import csv
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


CHECKPOINT_NAME = re.compile(r"step_\d{9,}")


class RunDirError(RuntimeError):
    """A run directory or checkpoint that cannot be used, with the reason."""


# ----------------------------------------------------------------------------- versions


def compute_settings(config: Any) -> dict[str, Any]:
    """What decides a run's float arithmetic beyond its config: torch's thread count and
    the precision ``auto`` resolved to on this machine."""
    import torch

    resolve = getattr(config, "torch_precision", None)
    return {
        "torch_threads": torch.get_num_threads(),
        "precision": resolve() if callable(resolve) else None,
    }


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


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes to ``path`` inside the block: an ``OSError`` that names no file (a full disk
    fails a write, not an open) is given ``path``, so that its one-line message says where."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    with writing(path):
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


def _json_ready(value: Any, *, exact: bool = False) -> Any:
    """``value`` as JSON values. NaN and infinities, which JSON lacks, become
    ``{"__float__": "nan"}`` when ``exact`` (checkpoints, read back by
    :func:`load_checkpoint`), else ``None`` (run.json, read by other programs)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v, exact=exact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v, exact=exact) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)} if exact else None
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


class Entries(dict):
    """A dict read from a file whose missing key is a :class:`RunDirError` naming the file
    and the key (``KeyError`` would name neither)."""

    def __init__(self, items: Mapping[str, Any], where: str) -> None:
        super().__init__(items)
        self.where = where

    def __missing__(self, key: str) -> Any:
        raise RunDirError(f"{self.where} lacks {key!r}")


# What restoring a damaged or foreign checkpoint raises: a missing entry, a value of the
# wrong type or shape (the libraries that take the values raise all of these).
RESTORE_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    RuntimeError,
    AssertionError,
    OverflowError,
)


@dataclass
class Checkpoint:
    """What a checkpoint holds: tensors, JSON state and plain numpy arrays.

    Each is an :class:`Entries`, so a missing key names the checkpoint's file.
    """

    path: Path
    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @contextlib.contextmanager
    def restoring(self) -> Iterator[Checkpoint]:
        """Restore from this checkpoint inside the ``with`` block: any error the stored
        values cause (missing, of the wrong type or shape) becomes a :class:`RunDirError`
        naming the checkpoint, as for any other bad input."""
        try:
            yield self
        except RunDirError:
            raise
        except RESTORE_ERRORS as err:
            raise RunDirError(
                f"checkpoint {self.path} cannot be restored, it is damaged or was written by "
                f"another program ({type(err).__name__}: {err})"
            ) from err


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
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}."))
    try:
        cpu = {k: v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}
        try:
            save_file(_unshare(cpu), tmp / "tensors.safetensors")
        except SafetensorError as err:  # its I/O errors (a full disk) are not OSErrors
            raise OSError(f"cannot write {tmp / 'tensors.safetensors'}: {err}") from err
        for k, v in (arrays or {}).items():
            if np.asarray(v).dtype == object:
                raise TypeError(f"array {k!r} has dtype object, which would need pickle")
        with writing(tmp / "arrays.npz"):
            np.savez(tmp / "arrays.npz", **{k: np.asarray(v) for k, v in (arrays or {}).items()})
        payload = {"step": step, "state": _json_ready(dict(state or {}), exact=True)}
        with writing(tmp / "state.json"):
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
    """The checkpoint ``LATEST`` points at, or ``None`` when there is none yet.

    ``LATEST`` must name a ``step_<n>`` folder beside it: a pointer anywhere else (another
    run's checkpoint, a path) is refused, never followed.
    """
    pointer = Path(directory) / "LATEST"
    if not pointer.exists():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{pointer} cannot be read: {err}") from None
    if not CHECKPOINT_NAME.fullmatch(name):
        raise RunDirError(
            f"{pointer} must name a checkpoint folder beside it (step_<digits>), "
            f"holds {name[:80]!r}"
        )
    path = Path(directory) / name
    if not path.is_dir():
        raise RunDirError(f"{pointer} points at {name}, which does not exist")
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
    where = f"checkpoint {path}/state.json"
    try:
        payload = json.loads(
            (path / "state.json").read_text(encoding="utf-8"),
            object_hook=lambda d: float(d["__float__"]) if set(d) == {"__float__"} else d,
        )
        if not isinstance(payload, dict) or set(payload) != {"step", "state"}:
            raise ValueError("it must be an object with the keys 'step' and 'state'")
        step, state = payload["step"], payload["state"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a count, got {step!r}")
        if not isinstance(state, dict):
            raise ValueError(f"state must be an object, got {type(state).__name__}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{where} is corrupt: {err}") from None
    try:
        tensors = load_file(path / "tensors.safetensors")
    except (SafetensorError, OSError, ValueError) as err:
        raise RunDirError(f"checkpoint {path}/tensors.safetensors is corrupt: {err}") from None
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, *RESTORE_ERRORS) as err:
        raise RunDirError(f"checkpoint {path}/arrays.npz is corrupt: {err}") from None
    return Checkpoint(
        path=path,
        step=step,
        tensors=Entries(tensors, f"checkpoint {path}/tensors.safetensors"),
        state=_entries(state, where),
        arrays=Entries(arrays, f"checkpoint {path}/arrays.npz"),
    )


def _entries(value: Any, where: str) -> Any:
    """``value`` with every dict inside it an :class:`Entries` naming ``where``."""
    if isinstance(value, dict):
        return Entries({k: _entries(v, where) for k, v in value.items()}, where)
    if isinstance(value, list):
        return [_entries(v, where) for v in value]
    return value


# ----------------------------------------------------------------------------- CSV logs


class CsvLog:
    """An append-only CSV table whose header is fixed by its first row (or given)."""

    def __init__(self, path: Path, columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = list(columns) if columns else None
        if self.path.exists() and self.path.stat().st_size:
            first = self._parse(lambda lines: csv.reader(lines[:1]))
            header = first[0] if first else None
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
        with writing(self.path), self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)

    def _lines(self) -> list[str]:
        """The file's complete lines, ending in ``\n`` (a half-written last line dropped)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except UnicodeDecodeError as err:
            raise RunDirError(f"{self.path} is not a CSV log: {err}") from None
        return lines[:-1] if lines and not lines[-1].endswith("\n") else lines

    def _parse(self, reader: Callable[[list[str]], Iterator[Any]]) -> list[Any]:
        """The file's complete lines through a ``csv`` reader, errors naming the file."""
        try:
            return list(reader(self._lines()))
        except csv.Error as err:
            raise RunDirError(f"{self.path} is not a CSV log: {err}") from None

    def read(self) -> list[dict[str, str]]:
        """All complete rows as dicts of strings (a half-written last line is ignored)."""
        return self._parse(csv.DictReader) if self.path.exists() else []

    def truncate(self, rows: int) -> None:
        """Keep the header and the first ``rows`` rows: what a checkpoint had seen. Every
        line is rewritten ending in ``\n``, the one line ending of ogm's logs."""
        if not self.path.exists():
            return
        lines = [line.rstrip("\r\n") + "\n" for line in self._lines()]
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
    kl_to_init: float = float("nan"),
) -> dict[str, Any]:
    """One episodes.csv row for a finished episode, with every event's count and share.

    ``phase`` is ``train`` (an episode the agent acted in while learning) or ``eval``;
    ``mode`` is ``greedy`` (most likely actions) or ``sampled``. ``kl_to_init`` is the
    episode's summed KL of the acting policy from the initial one (NaN: not measured).
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
    row["kl_to_init"] = float(kl_to_init)
    return row


def episode_columns(event_names: Sequence[str]) -> list[str]:
    """The episodes.csv header for a game with these events (``kl_to_init`` last: it came
    after the event columns)."""
    columns = list(EPISODE_COLUMNS)
    for name in event_names:
        columns += [f"ev_{name}", f"ev_{name}_share"]
    return [*columns, "kl_to_init"]


# ----------------------------------------------------------------------------- TensorBoard


class TensorBoard:
    """A TensorBoard ``SummaryWriter`` that never stops a run: where events cannot be
    written (a read-only or full file system) it says so in one line and writes no more.

    The run's logs and checkpoints report such a directory themselves, with the file they
    failed on. TensorBoard writes from a thread of its own, which would print a traceback
    for the same failure; :func:`_quiet_writer_threads` keeps those threads quiet (the
    failure reaches this class at the next call anyway).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._writer = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):  # can events be written here?
                pass
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()
            self._writer = SummaryWriter(str(self.directory))
        except OSError as err:
            self._stop(err)

    def _call(self, method: str, *args: Any) -> None:
        if self._writer is not None:
            try:
                getattr(self._writer, method)(*args)
            except OSError as err:
                self._stop(err)

    def _stop(self, err: OSError) -> None:
        self._writer = None
        print(f"warning: TensorBoard events stop here ({self.directory}): {err}", file=sys.stderr)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call("add_scalar", tag, value, step)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
        self._writer = None


def _quiet_writer_threads() -> None:
    """Install (once) a ``threading.excepthook`` that drops the ``OSError`` of
    TensorBoard's writer threads and passes everything else to the previous hook."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiets_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


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
            "compute": compute_settings(config),
            "status": "running",
            "created": _now(),
        }
        run = cls(path, record)
        run._write_record()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory (its run.json checked: an object holding kind,
        config, seed and status of the right types)."""
        path = Path(path)
        file = path / RUN_FILE
        if not file.exists():
            raise RunDirError(f"{path} is not a run directory: {RUN_FILE} is missing")
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"{file} is corrupt: {err}") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{file} is corrupt: it holds {type(record).__name__}, not an object")
        for key, kind in (("kind", str), ("config", dict), ("seed", int), ("status", str)):
            if key not in record:
                raise RunDirError(f"{file} lacks {key!r}")
            if not isinstance(record[key], kind) or isinstance(record[key], bool):
                raise RunDirError(
                    f"{file}: {key!r} must be {kind.__name__}, got {record[key]!r:.60}"
                )
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
        try:  # a run continues only where it can write: say so before anything else fails
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as err:
            raise OSError(
                err.errno, f"{err.strerror} (the run cannot continue)", str(path)
            ) from None
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

    @property
    def fingerprint(self) -> str:
        """A digest of what makes this run this run (kind, config, seed), which each of its
        checkpoints records, so that one from any other run is never resumed from."""
        identity = {k: self.record[k] for k in ("kind", "config", "seed")}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def set_status(self, status: str, **extra: Any) -> None:
        """Record ``running``, ``done`` or ``failed`` (with any extra fields)."""
        self.record.update(status=status, updated=_now(), **_json_ready(extra))
        self._write_record()

    def record_failure(self, err: BaseException) -> None:
        """Mark the run ``failed`` with the error's one-line summary. A run directory that
        cannot take the record (often the very failure: a full or read-only disk) is left
        as it is, so that the error the caller re-raises stays the one the user sees."""
        with contextlib.suppress(OSError):
            self.set_status("failed", error=" ".join(f"{type(err).__name__}: {err}".split()))

    def _write_record(self) -> None:
        atomic_write_text(self.path / RUN_FILE, json.dumps(self.record, indent=2, allow_nan=False))

    # -- logs
    def episodes(self, event_names: Sequence[str]) -> CsvLog:
        """The episodes.csv log with the columns for these event names."""
        if self._episodes is None:
            self._episodes = CsvLog(self.path / "episodes.csv", episode_columns(event_names))
        return self._episodes

    def tensorboard(self) -> TensorBoard:
        """The run's TensorBoard writer (scalars under ``tb/``, best effort)."""
        if self._tb is None:
            self._tb = TensorBoard(self.path / "tb")
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
        state = {**(state or {}), "_log_rows": log_rows, "_run": self.fingerprint}
        if self._tb is not None:
            self._tb.flush()
        return save_checkpoint(self.checkpoints, step, tensors=tensors, state=state, arrays=arrays)

    def resume(self) -> Checkpoint | None:
        """Load the latest checkpoint and cut the logs back to it.

        Returns ``None`` (and empties the logs) when the run has no checkpoint yet, so the
        caller starts from scratch. A checkpoint that another run wrote (its fingerprint
        differs: another model, config or seed) is refused, and so are logs that lost rows
        the checkpoint had seen.
        """
        path = latest_checkpoint(self.checkpoints)
        checkpoint = load_checkpoint(path) if path is not None else None
        logs = {"episodes": self._log("episodes.csv"), "rounds": self.rounds}
        rows = dict.fromkeys(logs, 0)
        if checkpoint is not None:
            if checkpoint.state.get("_run") != self.fingerprint:
                raise RunDirError(
                    f"checkpoint {checkpoint.path} was not written by the run in {self.path} "
                    f"(its run fingerprint {checkpoint.state.get('_run')!r:.40} is not "
                    f"{self.fingerprint!r}); refusing to resume from it"
                )
            with checkpoint.restoring():
                rows = {key: int(checkpoint.state["_log_rows"][key]) for key in logs}
            for key, log in logs.items():
                if not 0 <= rows[key] <= log.rows:
                    raise RunDirError(
                        f"{log.path} holds {log.rows} rows, but checkpoint {checkpoint.path} "
                        f"had seen {rows[key]}: the log lost rows, the run cannot continue"
                    )
        for key, log in logs.items():
            log.truncate(rows[key])
        return checkpoint

    def _log(self, name: str) -> CsvLog:
        if name == "episodes.csv" and self._episodes is not None:
            return self._episodes
        return CsvLog(self.path / name)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
