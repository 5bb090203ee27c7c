"""Scores of one tenant file kept in memory, emptied whenever the file may have changed.

Each score is kept with its JSON document as bytes, so a score read served from memory is
answered without building or encoding anything.

The file may have changed when this connection changed it (`total_changes`, checked on
every read: a write acknowledged here is in the next read at once) or another connection
committed to it (`PRAGMA data_version`: another worker, the sync process). The second is a
statement on SQLite, so on the event loop it is read once per loop iteration, by the first
score read of the iteration, rather than by every read.

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
from collections.abc import Callable

import orjson

from edge_node.rating.model import ItemScore

SCORES_IN_MEMORY = 4096  # items whose scores one tenant file keeps between its changes


class ScoreMemory:
    """Scores read from one connection, valid while its file is unchanged."""

    def __init__(self, conn: sqlite3.Connection, read: Callable[[str], ItemScore]) -> None:
        self._conn = conn
        self._read = read
        self._scores: dict[str, tuple[ItemScore, bytes]] = {}  # with its JSON document
        self._version: tuple[int, int] | None = None  # (data_version, total_changes)
        # The loop whose current iteration read data_version (None: read it on the next call).
        self._checked_in: asyncio.AbstractEventLoop | None = None

    def score(self, item_id: str) -> ItemScore:
        """The item's score: from memory when the file is unchanged, else read and kept."""
        return self._entry(item_id)[0]

    def document(self, item_id: str) -> bytes:
        """The item's score as the API's JSON document (ItemScore.to_json), encoded."""
        return self._entry(item_id)[1]

    def _entry(self, item_id: str) -> tuple[ItemScore, bytes]:
        if not self._checked_now():
            self._check()
        found = self._scores.get(item_id)
        if found is None:
            score = self._read(item_id)
            found = (score, orjson.dumps(score.to_json()))
            if len(self._scores) >= SCORES_IN_MEMORY:
                self._scores.clear()  # a bound, not an LRU: refilling costs one read each
            self._scores[item_id] = found
        return found

    def _checked_now(self) -> bool:
        """Whether the version read in this loop iteration still holds for this connection."""
        if self._checked_in is None or self._version is None:
            return False
        if self._version[1] != self._conn.total_changes:
            return False
        try:
            return asyncio.get_running_loop() is self._checked_in
        except RuntimeError:
            return False  # a loop stopped before its iteration ended: read it again

    def _check(self) -> None:
        """Read the file's version now; empty the memory when it moved."""
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        version = (data_version, self._conn.total_changes)
        if version != self._version:
            self._scores.clear()
            self._version = version
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no iteration to end: every read checks
        if self._checked_in is not loop:
            self._checked_in = loop
            loop.call_soon(self._end_iteration)

    def _end_iteration(self) -> None:
        self._checked_in = None
