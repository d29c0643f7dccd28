"""Where ogm caches what it builds from recipes (datasets, reward models): the folder
``$OGM_CACHE_DIR``, by default ``~/.cache/ogm``, one subfolder per kind."""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of artefact, e.g. ``cache_dir("datasets")``."""
    return Path(os.environ.get("OGM_CACHE_DIR", "~/.cache/ogm")).expanduser() / kind


# What this process has read from cache folders, with the state of their files then: an
# env vector builds its reward model once per copy, a run checks its dataset before it loads
# it, and a worker of `ogm run` does both again for every run of the same world; reading the
# files once saves 10-20% of a small run. Least recently used first; a few entries only, as
# a dataset can be large.
_MEMO_ENTRIES = 8
_memo: OrderedDict[tuple[Path, str], tuple[tuple[tuple[str, int, int], ...], Any]] = OrderedDict()


def _state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    files = [(p, p.stat()) for p in sorted(folder.rglob("*")) if p.is_file()]
    return tuple((str(p.relative_to(folder)), st.st_mtime_ns, st.st_size) for p, st in files)


def recall(folder: str | os.PathLike, kind: str) -> Any | None:
    """A copy of what :func:`remember` stored as ``kind`` for ``folder``, if the folder still
    has exactly the files it had then (names, sizes and modification times); else None."""
    key = (Path(folder), kind)
    if key not in _memo or not key[0].is_dir() or _memo[key][0] != _state(key[0]):
        return None
    _memo.move_to_end(key)
    return copy.deepcopy(_memo[key][1])


def remember(folder: str | os.PathLike, kind: str, value: Any) -> None:
    """Keep a copy of ``value``, read from (or checked against) ``folder`` as its files are
    now, for :func:`recall` in this process."""
    key = (Path(folder), kind)
    _memo[key] = (_state(key[0]), copy.deepcopy(value))
    _memo.move_to_end(key)
    while len(_memo) > _MEMO_ENTRIES:
        _memo.popitem(last=False)
