"""Progress of a long command, for a person watching a terminal, and for no one else.

`backup`, `restore`, `keys rotate-fleet` and `billing reconcile` say what they are doing as
they go, one line rewritten in place on stderr, when stderr is a terminal; piped or
redirected they print nothing but their JSON on stdout, as before, so scripts read the same
output.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_INTERVAL_SECONDS = 0.1  # a terminal need not be redrawn more often than this


class Progress:
    """`step()` for each unit of work of `total` (None: unknown), numbered unless not
    `numbered` (steps of different kinds); `done()` at the end."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        numbered: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._numbered = numbered
        self.shown = self._stream.isatty()
        self._what = what
        self._total = total
        self._count = 0
        self._drawn_at = 0.0

    def step(self, item: str = "") -> None:
        self._count += 1
        now = time.monotonic()
        if self.shown and (now - self._drawn_at >= MIN_INTERVAL_SECONDS or self._finished):
            of = f"/{self._total}" if self._total is not None else ""
            count = f" {self._count}{of}" if self._numbered else ""
            self._stream.write(f"\r\x1b[K{self._what}{count} {item}"[:200])
            self._stream.flush()
            self._drawn_at = now

    @property
    def _finished(self) -> bool:
        return self._total is not None and self._count >= self._total

    def done(self, summary: str = "done") -> None:
        if self.shown:
            self._stream.write(f"\r\x1b[K{self._what}: {summary}\n")
            self._stream.flush()
