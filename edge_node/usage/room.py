"""The free-space floor: how much room the data directory's filesystem has left, read cheaply.

Billable requests are admitted only while the filesystem holding the usage queue has more free
bytes than `storage.min_free_bytes`. The floor is what keeps a full disk from ever failing a
usage event of a request already carried out: the writes it admits (ratings in tenant files,
events in the queue) stop well before the last byte, so the events of the requests in flight
always fit. `statvfs` is a system call; it is made at most every `REFRESH_SECONDS`, not per
request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

REFRESH_SECONDS = 0.25


class DiskFloor:
    """Free bytes of the filesystem holding `path`, against a floor."""

    def __init__(
        self,
        path: Path,
        floor_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.floor_bytes = floor_bytes
        self._clock = clock
        self._read_at = -REFRESH_SECONDS
        self._free: int | None = None
        self._error: OSError | None = None

    def free_bytes(self) -> int | None:
        """Bytes an unprivileged writer may still take (None when the filesystem cannot be
        asked); at most REFRESH_SECONDS old."""
        now = self._clock()
        if now - self._read_at >= REFRESH_SECONDS:
            self._read_at = now
            try:
                info = os.statvfs(self.path)
            except OSError as exc:
                self._free, self._error = None, exc
            else:
                self._free, self._error = info.f_bavail * info.f_frsize, None
        return self._free

    def shortfall(self) -> str | None:
        """Why the filesystem is below the floor, or None while it has room."""
        free = self.free_bytes()
        if free is None:
            return f"the filesystem of {self.path} cannot be read: {self._error}"
        if free < self.floor_bytes:
            return (
                f"{free} bytes free on the filesystem of {self.path}, below the floor of "
                f"{self.floor_bytes} (storage.min_free_bytes)"
            )
        return None
