"""Group commit: appends that arrive together share one write() and one fsync.

Appends are queued on the event loop. One flush task takes everything queued, encodes it,
and hands it to a dedicated writer thread that writes it and fsyncs it, so the loop keeps
serving meanwhile; appends that arrive during that fsync form the next batch. Each append's
future resolves only after the fsync that covers its record. Appends may instead take the
batch's shared future (`submit_shared_many`): one future for every record queued that way
before the batch is cut, resolved by the same fsync, so a hundred appenders cost one future,
not a hundred.

A batch whose write or fsync fails (a full disk, an I/O error) is neither acknowledged nor
dropped: its bytes are cut off the segment again (the file truncated to its last durable size,
segments it created removed), and the same batch is written again after a pause that grows to
`RETRY_MAX_SECONDS`, until it is durable. Rewriting, rather than fsyncing again, is what makes
the retry honest: after a failed fsync the kernel may have dropped the dirty pages it could not
write, and a second fsync would report success for data that is not on disk. Meanwhile appends
queue up behind the batch, and `failure` names the error so that callers stop taking new work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.queue.errors import QueueWriteError
from edge_node.queue.framing import HEADER_SIZE, encode_into
from edge_node.queue.reserve import Reserve
from edge_node.queue.segments import Segment, SegmentCatalog, segment_name
from edge_node.queue.status import QueueStats

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 1.0


@dataclass(slots=True)
class _Chunk:
    """The part of a batch that goes to one segment."""

    segment: Segment
    created: bool
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class SegmentAppender:
    """Appends batches to segment files; used by one writer thread, one batch at a time."""

    def __init__(self, active: Path, directory_fd: int, fsync: Callable[[int], None]):
        self._fd = os.open(active, os.O_WRONLY | os.O_APPEND)
        self._directory_fd = directory_fd
        self._fsync = fsync

    def write(self, chunks: list[_Chunk]) -> None:
        """Write and fsync each chunk, rolling to new segment files where the plan says."""
        created = False
        for chunk in chunks:
            if chunk.created:
                self._roll(chunk.segment.path)
                created = True
            _write_all(self._fd, b"".join(chunk.parts))
            # Each segment is durable before the next exists: only the last can be torn.
            self._fsync(self._fd)
        if created:
            self._fsync(self._directory_fd)

    def rollback(self, active: Path, durable_size: int, chunks: list[_Chunk]) -> None:
        """Undo a failed write: `active` cut back to its `durable_size`, the segments the batch
        created removed, and `active` the file appended to again."""
        fd = os.open(active, os.O_WRONLY | os.O_APPEND)
        try:
            os.ftruncate(fd, durable_size)
            for chunk in chunks:
                if chunk.created:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(chunk.segment.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        """Close the active segment's file."""
        os.close(self._fd)

    def _roll(self, path: Path) -> None:
        """Make a new, empty segment file the one appended to."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(self._fd)
        self._fd = fd


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written; a short write is legal for large buffers."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class GroupCommitter:
    """Queues appends and commits them in batches; owns sequence numbering."""

    def __init__(
        self,
        catalog: SegmentCatalog,
        appender: SegmentAppender,
        segment_bytes: int,
        commit_interval: float,
        stats: QueueStats,
        *,
        reserve: Reserve | None = None,
    ):
        self._loop = asyncio.get_running_loop()
        self._catalog = catalog
        self._appender = appender
        self._segment_bytes = segment_bytes
        self._commit_interval = commit_interval
        self._stats = stats
        self._directory = catalog.active.path.parent
        self._next_seq = catalog.last_seq + 1
        self._payloads: list[bytes] = []
        self._timestamps: list[int] = []
        self._futures: list[tuple[int, asyncio.Future[int]]] = []
        self._shared: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._give_up_at: float | None = None
        self._reserve = reserve
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-writer")

    @property
    def failure(self) -> BaseException | None:
        """The write or fsync error the writer is retrying after, while it lasts."""
        return self._failure

    @property
    def pending(self) -> int:
        """Appends queued for the next batch."""
        return len(self._payloads)

    def submit(self, payload: bytes, timestamp_ms: int) -> asyncio.Future[int]:
        """Queue one record; the future gives its sequence number once it is durable."""
        future = self._loop.create_future()
        self._futures.append((self._next_seq, future))
        self._queue(payload, timestamp_ms)
        return future

    def submit_shared_many(
        self, payloads: list[bytes], timestamps_ms: list[int]
    ) -> asyncio.Future[int]:
        """Queue records, in order; the future, shared by every record queued this way for
        the same batch, gives the batch's last sequence number once the whole batch is
        durable."""
        shared = self._shared
        if shared is None:
            shared = self._shared = self._loop.create_future()
        self._payloads += payloads
        self._timestamps += timestamps_ms
        self._next_seq += len(payloads)
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        return shared

    def _queue(self, payload: bytes, timestamp_ms: int) -> None:
        self._payloads.append(payload)
        self._timestamps.append(timestamp_ms)
        self._next_seq += 1
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    async def drain(self, *, give_up_after: float | None = None) -> None:
        """Wait until every queued append has been committed; with `give_up_after`, a batch
        still failing that many seconds from now fails with everything queued behind it."""
        if give_up_after is not None:
            self._give_up_at = self._loop.time() + give_up_after
        while self._task is not None:
            # Shielded: a caller giving up on close() must not abort a half-done batch.
            await asyncio.shield(self._task)

    def close(self) -> None:
        """Release the writer thread and the segment file; call after drain()."""
        self._thread.shutdown(wait=True)
        self._appender.close()

    async def _run(self) -> None:
        try:
            while self._payloads:
                if self._commit_interval:
                    await asyncio.sleep(self._commit_interval)
                await self._commit_batch()
        finally:
            self._task = None

    async def _commit_batch(self) -> None:
        """Write everything queued as one batch, retrying until it is durable, and resolve its
        futures."""
        payloads, timestamps, futures = self._payloads, self._timestamps, self._futures
        last_seq = self._next_seq - 1
        # Each record's own future gets its number, the batch's shared one the last number.
        results = [*futures, (last_seq, self._shared)] if self._shared is not None else futures
        waiters = [future for _, future in results]
        self._payloads, self._timestamps, self._futures, self._shared = [], [], [], None
        first_seq = self._next_seq - len(payloads)
        try:
            chunks = self._plan(payloads, timestamps, first_seq)
        except Exception as exc:
            self._fail(exc, waiters)
            return
        try:
            durable = await self._write_until_durable(chunks)
        except asyncio.CancelledError as exc:
            self._fail(exc, waiters)
            raise
        if not durable:
            assert self._failure is not None
            self._fail(self._failure, waiters)
            await self._attempt_undo(chunks)
            return
        if self._failure is not None:
            log.warning("queue %s: writing works again", self._directory)
            self._failure = None
            if self._reserve is not None and self._give_up_at is None:
                await self._loop.run_in_executor(self._thread, self._reserve.ensure)
        self._apply(chunks, first_seq, len(payloads))
        for seq, future in results:
            if not future.done():
                future.set_result(seq)

    async def _write_until_durable(self, chunks: list[_Chunk]) -> bool:
        """Attempt the batch until it is durable (True) or the closing queue gives up."""
        pause = RETRY_FIRST_SECONDS
        while not await self._attempt(chunks):
            if self._give_up_at is not None:
                if await self._release_reserve():
                    continue  # again at once, into the room the reserve leaves
                if self._loop.time() >= self._give_up_at:
                    return False
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_MAX_SECONDS)
        return True

    async def _release_reserve(self) -> bool:
        """A closing queue that cannot write gives its reserve back (once); whether it did."""
        if self._reserve is None:
            return False
        reserve, self._reserve = self._reserve, None
        return await self._loop.run_in_executor(self._thread, reserve.release)

    async def _attempt(self, chunks: list[_Chunk]) -> bool:
        """Write and sync the batch once (cutting off what a failed attempt left first);
        True when it is durable."""
        if self._failure is not None and not await self._attempt_undo(chunks):
            return False
        try:
            await self._loop.run_in_executor(self._thread, self._appender.write, chunks)
        except Exception as exc:
            if self._failure is None:
                log.error("queue %s: writing a batch failed, retrying: %s", self._directory, exc)
            self._failure = exc
            return False
        return True

    async def _attempt_undo(self, chunks: list[_Chunk]) -> bool:
        """Cut a failed batch off the files; False (and the error kept) when that fails too."""
        active = self._catalog.active
        try:
            await self._loop.run_in_executor(
                self._thread, self._appender.rollback, active.path, active.size, chunks
            )
        except OSError as exc:
            self._failure = exc
            return False
        return True

    def _plan(self, payloads: list[bytes], timestamps: list[int], first_seq: int) -> list[_Chunk]:
        """Encode the batch, split where a segment must roll (one pass, the loop's own work
        per record kept to the frame itself: a batch holds every request of a loop's turn)."""
        segment = self._catalog.active
        chunk = _Chunk(segment, created=False)
        chunks = [chunk]
        parts = chunk.parts
        start = offset = segment.size
        noted_from = segment.next_noted_offset()
        limit = self._segment_bytes
        seq = first_seq
        for batch_index, payload in enumerate(payloads):
            size = HEADER_SIZE + len(payload)
            if offset and offset + size > limit:
                chunk.size = offset - start
                segment = Segment(seq, self._directory / segment_name(seq), 0, [])
                chunk = _Chunk(segment, created=True)
                chunks.append(chunk)
                parts = chunk.parts
                start = offset = noted_from = 0
            if offset >= noted_from:
                # Indexing before the write is safe: readers only look up durable records.
                segment.note_frame(seq, offset)
                noted_from = segment.next_noted_offset()
            encode_into(parts, payload, seq, batch_index, timestamps[batch_index])
            offset += size
            seq += 1
        chunk.size = offset - start
        return [chunk for chunk in chunks if chunk.size]

    def _apply(self, chunks: list[_Chunk], first_seq: int, count: int) -> None:
        """Publish a durable batch: new segments, sizes, the newest sequence number."""
        for chunk in chunks:
            if chunk.created:
                self._catalog.add(chunk.segment)
            chunk.segment.size += chunk.size
        self._catalog.last_seq = first_seq + count - 1
        self._stats.appended_records += count
        self._stats.group_commits += 1

    def _fail(self, exc: BaseException, batch: list[asyncio.Future[int]]) -> None:
        """Fail this batch and everything queued (the queue is closing, or the batch could not
        be encoded)."""
        queued = [future for _, future in self._futures]
        if self._shared is not None:
            queued.append(self._shared)
        for future in batch + queued:
            if not future.done():
                future.set_exception(QueueWriteError(self._directory, exc))
        self._payloads, self._timestamps, self._futures, self._shared = [], [], [], None
