"""Answers read from one tenant file kept in memory, dropped whenever the file may have changed.

A score read and a page of ratings are answered from memory, as the encoded JSON documents
the API serves, while the file is unchanged since they were read: no statement, no row
turned into JSON, nothing encoded.

The file may have changed when this connection changed it (`total_changes`, checked on
every read: a write acknowledged here is in the next read at once) or another connection
committed to it (`PRAGMA data_version`: another worker, the sync process). The second is a
statement on SQLite, so on the event loop it is read once per loop iteration, by the first
read of the iteration, rather than by every read (`FileVersion`, shared by every memory of
the file).

Why once per iteration never serves a write acknowledged elsewhere stale: a request can only
learn of another process's commit through I/O (the writer's answer, then this request's
bytes), and the loop runs the handler of a request it received in a later callback than the
one that read its bytes. If the check of this iteration ran before those bytes were read,
the handler runs after the end-of-iteration callback the check scheduled, which forces a new
check; if it ran after, it already saw the commit. Outside an event loop every read checks.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FileVersion:
    """Which version of one connection's file the memories hold answers of."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._read: tuple[int, int] | None = None  # (data_version, total_changes)
        self.number = 0  # moves whenever the file may have changed since the last look
        # The loop whose current iteration read data_version (None: read it on the next call).
        self._checked_in: asyncio.AbstractEventLoop | None = None

    def current(self) -> int:
        """The version's number now: the same number means the same file contents."""
        if not self._checked_now():
            self._check()
        return self.number

    def _checked_now(self) -> bool:
        """Whether the version read in this loop iteration still holds for this connection."""
        if self._checked_in is None or self._read is None:
            return False
        if self._read[1] != self._conn.total_changes:
            return False
        try:
            return asyncio.get_running_loop() is self._checked_in
        except RuntimeError:
            return False  # a loop stopped before its iteration ended: read it again

    def _check(self) -> None:
        """Read the file's version now; a new number when it moved."""
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        read = (data_version, self._conn.total_changes)
        if read != self._read:
            self.number += 1
            self._read = read
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no iteration to end: every read checks
        if self._checked_in is not loop:
            self._checked_in = loop
            loop.call_soon(self._end_iteration)

    def _end_iteration(self) -> None:
        self._checked_in = None


class ReadMemory(Generic[K, V]):
    """Answers by key, valid while the file's version is the one they were read at; at most
    `entries` of them and, with `size`, at most `max_bytes` in all, none above a tenth of
    that (kept answers are a bound, not an LRU: refilling costs one read each). With `keep`,
    only the answers it approves are kept; the others are read again each time."""

    def __init__(
        self,
        version: FileVersion,
        entries: int,
        *,
        size: Callable[[V], int] | None = None,
        max_bytes: int = 0,
        keep: Callable[[V], bool] | None = None,
    ) -> None:
        self._version = version
        self._entries = entries
        self._keepable = keep
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._held: dict[K, V] = {}
        self._held_at = -1  # the version number `_held` was read at

    def get(self, key: K, read: Callable[[K], V]) -> V:
        """The answer for `key`: from memory when the file is unchanged, else read and kept."""
        number = self._version.current()
        if number != self._held_at:
            self._forget()
            self._held_at = number
        found = self._held.get(key)
        if found is None:
            found = read(key)
            self._keep(key, found)
        return found

    def _keep(self, key: K, answer: V) -> None:
        if self._keepable is not None and not self._keepable(answer):
            return
        if len(self._held) >= self._entries:
            self._forget()
        if self._size is not None:
            size = self._size(answer)
            if size * 10 > self._max_bytes:
                return  # read again each time rather than crowd out every other answer
            if self._bytes + size > self._max_bytes:
                self._forget()
            self._bytes += size
        self._held[key] = answer

    def _forget(self) -> None:
        self._held.clear()
        self._bytes = 0
