"""Progress of a long training loop: a tqdm bar on a terminal, plain lines otherwise.

When standard error is not a terminal (a log file, a CI job, a notebook's captured output)
a bar would write hundreds of carriage-return updates; instead ``Progress`` prints one
plain line every ``every_s`` seconds and one at the end, e.g.::

    offline DT: 300/600 updates (50%), 41 s, about 41 s left

``OGM_PROGRESS=0`` silences it (``ogm run`` sets it for its runs: the runner shows its own
bar over runs).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

PROGRESS_VARIABLE = "OGM_PROGRESS"
LINE_EVERY_S = 30.0


def progress_enabled() -> bool:
    """Whether progress is shown (``$OGM_PROGRESS`` is not ``0``)."""
    return os.environ.get(PROGRESS_VARIABLE, "1") != "0"


class Progress:
    """Counts work done towards ``total`` (updates, environment steps, episodes)."""

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        initial: int = 0,
        every_s: float = LINE_EVERY_S,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.count = self.start_count = initial
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.enabled = progress_enabled()
        self.start = self.last_line = time.monotonic()
        self.status: dict[str, object] = {}
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int = 1, **status: object) -> None:
        """Count ``n`` more units of work; ``status`` (e.g. ``env_steps=...``) is shown
        next to the count."""
        self.count += n
        self.status = status or self.status
        if self.bar is not None:
            self.bar.update(n)
            if status:
                self.bar.set_postfix(status)
        elif self.enabled and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def close(self) -> None:
        """End the bar, or print the last line (when any work was counted)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.count > self.start_count:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self.last_line = now
        elapsed = now - self.start
        done = self.count - self.start_count
        text = f"{self.desc}: {self.count:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({self.count / self.total:.0%})"
        text += f", {elapsed:.0f} s"
        left = self.total - self.count
        if done and left > 0:
            text += f", about {elapsed / done * left:.0f} s left"
        text += "".join(f", {key} {value}" for key, value in self.status.items())
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
