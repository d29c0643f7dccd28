"""Where ogm caches what it builds from recipes (datasets, reward models): the folder
``$OGM_CACHE_DIR``, by default ``~/.cache/ogm``, one subfolder per kind."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of artefact, e.g. ``cache_dir("datasets")``."""
    return Path(os.environ.get("OGM_CACHE_DIR", "~/.cache/ogm")).expanduser() / kind


# Cached artefacts this process has checked, with the state of their files then: an env
# vector builds its reward model once per copy, and a run checks its dataset before it loads
# it, so a check that reads the whole artefact would be repeated for nothing.
_checked: dict[Path, tuple[tuple[str, int, int], ...]] = {}


def _state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    files = [(p, p.stat()) for p in sorted(folder.rglob("*")) if p.is_file()]
    return tuple((str(p.relative_to(folder)), st.st_mtime_ns, st.st_size) for p, st in files)


def checked_before(folder: Path) -> bool:
    """Whether :func:`mark_checked` saw ``folder`` with exactly the files it has now (names,
    sizes and modification times): a cached artefact that passed its check in this process
    and was not written since."""
    folder = Path(folder)
    return folder in _checked and folder.is_dir() and _checked[folder] == _state(folder)


def mark_checked(folder: Path) -> None:
    """Record that ``folder`` passed its check as its files are now."""
    _checked[Path(folder)] = _state(Path(folder))
