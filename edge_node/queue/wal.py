"""The write-ahead queue: durable appends with group commit, named consumers, retention."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from edge_node.queue.cursors import check_consumer_name, read_cursor_files
from edge_node.queue.errors import CorruptRecord, QueueClosed, QueueFull
from edge_node.queue.framing import HEADER_SIZE, MAX_PAYLOAD_BYTES, Record
from edge_node.queue.opening import OpenedDirectory, open_directory
from edge_node.queue.reader import read_records, read_tail
from edge_node.queue.reserve import Reserve
from edge_node.queue.scanning import Damage, scan_segment
from edge_node.queue.segments import SegmentCatalog, delete_segment_files
from edge_node.queue.settings import QueueSettings
from edge_node.queue.status import QueueStats, QueueStatus, describe
from edge_node.queue.writer import GroupCommitter

_T = TypeVar("_T")
log = logging.getLogger(__name__)

# How long close() keeps retrying a batch whose write fails (a full disk) before it fails it.
CLOSE_RETRY_SECONDS = 10.0


async def open_queue(
    directory: str | os.PathLike[str],
    *,
    consumers: Iterable[str] = (),
    settings: QueueSettings | None = None,
    fsync: Callable[[int], None] = os.fsync,
) -> WriteAheadQueue:
    """Lock, recover and open the queue in `directory` (created if missing).

    `consumers` are declared up front so retention keeps every record for them from the
    start; cursors already on disk are kept too. `fsync` is called for every durability
    point (segments, the directory, cursor files); tests pass a wrapper to observe them.
    """
    path = Path(directory)
    names = tuple(dict.fromkeys(check_consumer_name(name) for name in consumers))
    opened = await asyncio.to_thread(open_directory, path, names, fsync)
    reserve = Reserve(path)
    await asyncio.to_thread(reserve.ensure)
    return WriteAheadQueue(path, settings or QueueSettings(), opened, reserve)


class WriteAheadQueue:
    """A crash-safe, size-bounded queue of byte records in one directory owned by one process.

    Create it with `open_queue`. An acknowledged append (its awaitable has resolved) survives
    SIGKILL and power loss; a full queue refuses appends instead of dropping records.
    """

    def __init__(
        self,
        directory: Path,
        settings: QueueSettings,
        opened: OpenedDirectory,
        reserve: Reserve | None = None,
    ):
        self.directory = directory
        self.settings = settings
        self.stats = QueueStats(
            truncated_tail_records=opened.report.truncated_records,
            truncated_tail_bytes=opened.report.truncated_bytes,
            deleted_segments=opened.deleted_segments,
        )
        self._opened = opened
        self._catalog = opened.catalog
        # Records up to here were in the directory when it was opened (or behind a cursor);
        # this open appends after it. A consumer that noted records beyond it before (its own
        # note, not a cursor) knows their numbers now name other records.
        self.opened_last_seq = opened.catalog.last_seq
        self._cursors = opened.cursors
        self._reserved_bytes = opened.catalog.total_bytes
        self._record_limit = min(HEADER_SIZE + MAX_PAYLOAD_BYTES, settings.segment_bytes)
        self._damage_seen: set[tuple[str, int]] = set()
        self._count_damage(opened.report.damaged)
        self._committer = GroupCommitter(
            opened.catalog,
            opened.appender,
            settings.segment_bytes,
            settings.commit_interval,
            self.stats,
            reserve=reserve,
        )
        self._commit_lock = asyncio.Lock()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def consumers(self) -> tuple[str, ...]:
        """Every consumer with a cursor: those declared now and those found on disk."""
        return tuple(sorted(self._cursors))

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest durable record (0 before the first append)."""
        return self._catalog.last_seq

    @property
    def write_failure(self) -> BaseException | None:
        """The write or fsync error the queue is retrying after, while it lasts: appends are
        queued behind it and acknowledged once the write succeeds again."""
        return self._committer.failure

    def free_bytes(self) -> int:
        """Bytes appends may still take before QueueFull; a record takes 32 + its payload."""
        return self.settings.max_bytes - self._reserved_bytes

    def append_nowait(
        self, payload: bytes, *, timestamp_ms: int | None = None
    ) -> asyncio.Future[int]:
        """Queue a record now; the future resolves to its sequence number once it is durable.

        Raises QueueFull (nothing written, nothing dropped) or QueueClosed at the call.
        `timestamp_ms` defaults to the wall clock and is what status() reports as the age
        of the oldest unconsumed record.
        """
        if type(payload) is not bytes:
            payload = bytes(payload)  # a bytearray could change before it is written
        size = self._admit(payload, timestamp_ms)
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        future = self._committer.submit(payload, timestamp_ms)
        self._reserved_bytes += size
        return future

    def append_shared(self, payload: bytes, *, timestamp_ms: int) -> asyncio.Future[int]:
        """Queue a record now; the future is shared by every record queued this way for the same
        group commit, and resolves (to that commit's last sequence number) once all of them are
        durable. Raises as append_nowait does.

        For many appenders that only need to know their record is durable: one future per
        batch instead of one per record. Awaiting a shared future from a task that may be
        cancelled must not cancel it for the others: shield it, or wait on it with callbacks.
        """
        return self.append_shared_many([payload], [timestamp_ms])

    def append_shared_many(
        self, payloads: list[bytes], timestamps_ms: list[int]
    ) -> asyncio.Future[int]:
        """`append_shared` of several records at once (at least one), in order: all are
        queued or, raising as append_nowait does, none."""
        if not payloads:
            raise ValueError("append_shared_many needs at least one record")
        size = sum(map(self._admit, payloads, timestamps_ms))
        if self._reserved_bytes + size > self.settings.max_bytes:  # each fits, not all
            raise QueueFull(
                self.directory, self._reserved_bytes, self.settings.max_bytes, self._slowest()
            )
        future = self._committer.submit_shared_many(payloads, timestamps_ms)
        self._reserved_bytes += size
        return future

    def _admit(self, payload: bytes, timestamp_ms: int | None) -> int:
        """Refuse a record the queue cannot take (QueueClosed, QueueFull, a bad record); the
        bytes it takes. Called for every append: the common case is three comparisons."""
        if self._closing:
            raise QueueClosed(self.directory)
        size = HEADER_SIZE + len(payload)
        if size > self._record_limit or (
            timestamp_ms is not None and not 0 <= timestamp_ms < 2**64
        ):
            self._refuse_record(size, timestamp_ms)
        if self._reserved_bytes + size > self.settings.max_bytes:
            raise QueueFull(
                self.directory, self._reserved_bytes, self.settings.max_bytes, self._slowest()
            )
        return size

    def append(self, payload: bytes, *, timestamp_ms: int | None = None) -> asyncio.Future[int]:
        """Append a record: awaited, its sequence number once it is durable. It is append_nowait
        under the name awaiting callers use (raising as it does, at the call): a future rather
        than a coroutine of its own spares every append a frame."""
        return self.append_nowait(payload, timestamp_ms=timestamp_ms)

    async def flush(self) -> None:
        """Wait until every append made so far is durable (or has failed)."""
        await self._committer.drain()

    async def read(
        self, consumer: str, max_records: int = 1000, *, after: int | None = None
    ) -> list[Record]:
        """Up to `max_records` durable records after the consumer's cursor, oldest first.

        Reading does not move the cursor: the same records come back until `commit`. Raises
        CorruptRecord when the next record the consumer needs cannot be read. `after` starts
        the read past a sequence number beyond the cursor instead, for a consumer that keeps
        its own durable note of what it has taken but not yet committed; it never reads
        records the consumer has committed.
        """
        self._ensure_open()
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        cursor, end = self._cursor(consumer), self._catalog.last_seq
        if after is not None:
            cursor = max(cursor, after)
        if cursor >= end:
            return []
        result = await self._consult(
            lambda catalog: read_records(catalog, cursor + 1, max_records, end)
        )
        self._count_damage(result.damage)
        if not result.records and result.loss is not None:
            loss = result.loss
            raise CorruptRecord(consumer, loss.segment, loss.offset, loss.first_seq, loss.last_seq)
        return result.records

    async def commit(self, consumer: str, up_to_seq: int) -> None:
        """Durably record that the consumer has handled every record up to `up_to_seq`."""
        self._ensure_open()
        self._cursor(consumer)
        async with self._commit_lock:
            cursor, last = self._cursors[consumer], self._catalog.last_seq
            if up_to_seq < cursor:
                raise ValueError(
                    f"consumer {consumer!r} has committed {cursor}; cursors only move forward, "
                    f"got {up_to_seq}"
                )
            if up_to_seq > last:
                raise ValueError(
                    f"consumer {consumer!r} cannot commit {up_to_seq}: the newest durable "
                    f"record is {last}"
                )
            if up_to_seq == cursor:
                return
            await asyncio.to_thread(self._opened.cursor_store.save, consumer, up_to_seq)
            self._cursors[consumer] = up_to_seq
            await self._delete_consumed_segments()

    async def adopt_cursors(self) -> int:
        """Take up cursors that a follower in another process (queue/follower.py) committed
        to their files, and delete the segments every consumer has now passed; returns how
        many cursors moved."""
        self._ensure_open()
        async with self._commit_lock:
            on_disk = await asyncio.to_thread(read_cursor_files, self.directory)
            moved = 0
            for consumer, seq in on_disk.items():
                if consumer in self._cursors and self._cursors[consumer] < seq <= self.last_seq:
                    self._cursors[consumer] = seq
                    moved += 1
            if moved:
                await self._delete_consumed_segments()
            return moved

    async def verify(self) -> list[tuple[Path, Damage]]:
        """Check every record of the segments before the one appended to against its
        checksum (in a thread): each damaged run is counted in `stats.corrupt_records` once,
        logged with its segment and offset, and returned. Run once after open."""
        self._ensure_open()
        sealed = self._catalog.snapshot().segments[:-1]
        found: list[tuple[Path, Damage]] = []
        for segment in sealed:
            try:
                damage = await asyncio.to_thread(_damage_in, segment.path, segment.first_seq)
            except FileNotFoundError:
                continue  # consumed and deleted meanwhile
            found += [(segment.path, run) for run in damage]
        for path, run in found:
            if (path.name, run.offset) not in self._damage_seen:
                log.error(
                    "queue %s: segment %s is damaged at offset %d (%d bytes); readers stop "
                    "there (`edge-node queue verify`)",
                    self.directory,
                    path.name,
                    run.offset,
                    run.size,
                )
        self._count_damage(found)
        return found

    async def status(self) -> QueueStatus:
        """A snapshot for operators: bytes, segments, and depth and cursor per consumer."""
        self._ensure_open()
        cursors, max_bytes = dict(self._cursors), self.settings.max_bytes
        return await self._consult(
            lambda catalog: describe(self.directory, catalog, cursors, max_bytes)
        )

    async def tail(self, count: int) -> list[Record]:
        """The newest `count` durable records, oldest first (damaged ones left out)."""
        self._ensure_open()
        return await self._consult(lambda catalog: read_tail(catalog, count))

    async def close(self) -> None:
        """Make every pending append durable, then release the files and the lock."""
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._close_task)

    async def __aenter__(self) -> WriteAheadQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _close(self) -> None:
        await self._committer.drain(give_up_after=CLOSE_RETRY_SECONDS)
        async with self._commit_lock:
            self._committer.close()
            os.close(self._opened.directory_fd)
            self._opened.lock.release()

    def _refuse_record(self, size: int, timestamp_ms: int | None) -> None:
        """Refuse, before it is queued, a record that could never be written."""
        if size > self._record_limit:
            raise ValueError(
                f"a queue record takes at most {self._record_limit} bytes with its "
                f"{HEADER_SIZE}-byte header, got {size}"
            )
        raise ValueError(f"timestamp_ms must be a u64 (ms since the epoch), got {timestamp_ms}")

    def _ensure_open(self) -> None:
        if self._closing:
            raise QueueClosed(self.directory)

    def _cursor(self, consumer: str) -> int:
        """The consumer's committed position; ValueError naming the known ones otherwise."""
        try:
            return self._cursors[consumer]
        except KeyError:
            known = ", ".join(repr(name) for name in self.consumers) or "none"
            raise ValueError(
                f"unknown queue consumer {consumer!r} (known: {known}); declare it in "
                "open_queue(consumers=...)"
            ) from None

    def _slowest(self) -> str | None:
        """The consumer holding back retention the most."""
        return min(self._cursors, key=self._cursors.__getitem__, default=None)

    async def _consult(self, read: Callable[[SegmentCatalog], _T]) -> _T:
        """Run a read on a snapshot of the segments in a worker thread.

        Retention may delete a segment a snapshot still lists (another consumer committed
        meanwhile); the read is then simply retried on a fresh snapshot.
        """
        for attempt in range(3):
            try:
                return await asyncio.to_thread(read, self._catalog.snapshot())
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _delete_consumed_segments(self) -> None:
        """Delete the segments every consumer has passed."""
        gone = self._catalog.behind(min(self._cursors.values()))
        if not gone:
            return
        await asyncio.to_thread(delete_segment_files, [segment.path for segment in gone])
        self._catalog.drop(gone)
        self._reserved_bytes -= sum(segment.size for segment in gone)
        self.stats.deleted_segments += len(gone)

    def _count_damage(self, damage: list[tuple[Path, Damage]]) -> None:
        """Count each damaged run once, however many reads cross it."""
        for path, run in damage:
            key = (path.name, run.offset)
            if key not in self._damage_seen:
                self._damage_seen.add(key)
                self.stats.corrupt_records += 1


def _damage_in(path: Path, first_seq: int) -> list[Damage]:
    """The damaged runs of a whole segment file."""
    return [item for item in scan_segment(path, 0, first_seq - 1) if isinstance(item, Damage)]
