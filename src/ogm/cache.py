"""Where ogm caches what it builds from recipes (datasets, reward models): the folder
``$OGM_CACHE_DIR``, by default ``~/.cache/ogm``, one subfolder per kind."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of artefact, e.g. ``cache_dir("datasets")``."""
    return Path(os.environ.get("OGM_CACHE_DIR", "~/.cache/ogm")).expanduser() / kind
