"""One consumer of a queue directory that another process owns: read, and commit its cursor.

The owner holds the directory's lock and appends; a follower takes no lock. It reads the
segments as they are on disk and commits by replacing the consumer's cursor file, as the
owner would (temp file, fsync, rename, fsync of the directory). The owner picks the new
cursor up with `WriteAheadQueue.adopt_cursors()` and only then deletes segments behind it,
so a follower never reads a deleted record it still needs.

What a follower sees is the page cache, where the newest records may still wait for the
owner's fsync; so it reads only up to the newest record it saw at least `settle_seconds`
ago, by which time the owner's group commit has long made it durable (or failed: the
owner then refuses appends). A directory no process owns can be followed too: its
segments are then kept until an owner opens it again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge_node.queue.cursors import CursorStore, check_consumer_name, read_cursor_files
from edge_node.queue.errors import CorruptRecord
from edge_node.queue.framing import Frame, Record
from edge_node.queue.inspection import catalog_on_disk, retrying
from edge_node.queue.reader import read_records
from edge_node.queue.scanning import scan_segment
from edge_node.queue.segments import Segment, SegmentCatalog, list_segment_files
from edge_node.queue.status import QueueStatus, describe

DEFAULT_SETTLE_SECONDS = 1.0


class ConsumerQueue(Protocol):
    """What a consumer needs of a queue: a WriteAheadQueue it owns, or a QueueFollower."""

    @property
    def directory(self) -> Path: ...

    @property
    def last_seq(self) -> int: ...

    @property
    def opened_last_seq(self) -> int: ...

    async def read(
        self, consumer: str, max_records: int = ..., *, after: int | None = ...
    ) -> list[Record]: ...

    async def commit(self, consumer: str, up_to_seq: int) -> None: ...

    async def status(self) -> QueueStatus: ...


class QueueFollower:
    """`consumer`'s view of the queue in `directory`, owned by another process (or by none).

    It offers what a consumer uses of a WriteAheadQueue: `read`, `commit`, `status` and
    `last_seq` (the newest record it may read, as of its last look at the directory).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        consumer: str,
        *,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        fsync: Callable[[int], None] = os.fsync,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.consumer = check_consumer_name(consumer)
        self._settle = settle_seconds
        self._fsync = fsync
        self._clock = clock
        self._seen: deque[tuple[float, int]] = deque()
        self._last_seq = 0
        self._looked_last_seq = 0
        self._lock = asyncio.Lock()
        self._tail: Segment | None = None  # the last segment as scanned so far
        self._tail_end = 0
        self._tail_seq = 0

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def opened_last_seq(self) -> int:
        """The newest settled record on disk at the last look. A queue reopened by its owner
        (WriteAheadQueue.opened_last_seq) numbers on from what it found; for a follower the
        directory as last seen is what a consumer's older notes must be checked against."""
        return self._looked_last_seq

    async def read(
        self, consumer: str, max_records: int = 1000, *, after: int | None = None
    ) -> list[Record]:
        """Up to `max_records` settled records after the cursor (or `after`), oldest first."""
        self._check(consumer)
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        catalog, cursor = await self._look()
        start = cursor if after is None else max(cursor, after)
        if start >= catalog.last_seq:
            return []
        result = await asyncio.to_thread(
            read_records, catalog, start + 1, max_records, catalog.last_seq
        )
        if not result.records and result.loss is not None:
            loss = result.loss
            raise CorruptRecord(consumer, loss.segment, loss.offset, loss.first_seq, loss.last_seq)
        return result.records

    async def commit(self, consumer: str, up_to_seq: int) -> None:
        """Durably replace the consumer's cursor file; cursors only move forward."""
        self._check(consumer)
        async with self._lock:
            cursor = await asyncio.to_thread(self._cursor_on_disk, None)
            if up_to_seq < cursor:
                raise ValueError(
                    f"consumer {consumer!r} has committed {cursor}; cursors only move forward, "
                    f"got {up_to_seq}"
                )
            if up_to_seq > self._last_seq:
                raise ValueError(
                    f"consumer {consumer!r} cannot commit {up_to_seq}: the newest settled "
                    f"record is {self._last_seq}"
                )
            if up_to_seq > cursor:
                await asyncio.to_thread(self._save, up_to_seq)

    async def status(self) -> QueueStatus:
        """The directory's status as this follower sees it (max_bytes unknown: None)."""
        catalog, cursor = await self._look()
        cursors = await asyncio.to_thread(read_cursor_files, self.directory)
        cursors[self.consumer] = cursor
        return await asyncio.to_thread(describe, self.directory, catalog, cursors, None)

    async def close(self) -> None:
        """Nothing is held between calls; present so a follower closes like a queue."""

    def _check(self, consumer: str) -> None:
        if consumer != self.consumer:
            raise ValueError(f"this follower of {self.directory} reads for {self.consumer!r} only")

    async def _look(self) -> tuple[SegmentCatalog, int]:
        """The segments on disk capped at the settled end, and the consumer's cursor."""
        catalog = await asyncio.to_thread(retrying, self._catalog)
        catalog.last_seq = self._settled(catalog.last_seq)
        self._last_seq = max(self._last_seq, catalog.last_seq)
        self._looked_last_seq = catalog.last_seq
        cursor = await asyncio.to_thread(self._cursor_on_disk, catalog)
        return catalog, cursor

    def _catalog(self) -> SegmentCatalog:
        """The segments on disk. Only what was appended to the last one since the previous
        look is scanned (a new last segment, or a shorter one, is scanned whole)."""
        if not self.directory.is_dir():
            return catalog_on_disk(self.directory)  # raises the error that names it
        segments = [
            Segment(first_seq, path, path.stat().st_size)
            for first_seq, path in list_segment_files(self.directory)
        ]
        if not segments:
            return SegmentCatalog([], 0)
        last, tail = segments[-1], self._tail
        if tail is None or tail.first_seq != last.first_seq or last.size < self._tail_end:
            tail = Segment(last.first_seq, last.path, 0, [])
            self._tail, self._tail_end, self._tail_seq = tail, 0, last.first_seq - 1
        for item in scan_segment(last.path, self._tail_end, self._tail_seq, last.size):
            if isinstance(item, Frame):
                tail.note_frame(item.seq, item.offset)
                self._tail_end, self._tail_seq = item.offset + item.size, item.seq
        last.index = list(tail.index or [])
        return SegmentCatalog(segments, self._tail_seq)

    def _settled(self, newest: int) -> int:
        """The newest sequence number seen at least `settle_seconds` ago."""
        now = self._clock()
        self._seen.append((now, newest))
        settled = 0
        while self._seen and self._seen[0][0] <= now - self._settle:
            settled = max(settled, self._seen.popleft()[1])
        if settled:
            self._seen.appendleft((now - self._settle, settled))
        return min(max(settled, self._last_seq), newest)

    def _cursor_on_disk(self, catalog: SegmentCatalog | None) -> int:
        cursor = read_cursor_files(self.directory).get(self.consumer)
        if cursor is not None:
            return cursor
        # No cursor yet: like a newly declared consumer, start before the oldest record kept.
        if catalog is None:
            return 0
        return (catalog.first_seq or catalog.last_seq + 1) - 1

    def _save(self, seq: int) -> None:
        directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            CursorStore(self.directory, directory_fd, self._fsync).save(self.consumer, seq)
        finally:
            os.close(directory_fd)
