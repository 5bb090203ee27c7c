"""Opening a queue directory: lock it, recover it, and settle every consumer's cursor."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from edge_node.queue.cursors import CursorStore, read_cursor_files
from edge_node.queue.locking import DirectoryLock
from edge_node.queue.recovery import RecoveryReport, recover_segments
from edge_node.queue.segments import Segment, SegmentCatalog, delete_segment_files, segment_name
from edge_node.queue.writer import SegmentAppender


@dataclass(slots=True)
class OpenedDirectory:
    """Everything recovery established about a directory this process now owns."""

    lock: DirectoryLock
    directory_fd: int
    catalog: SegmentCatalog
    cursors: dict[str, int]
    cursor_store: CursorStore
    appender: SegmentAppender
    report: RecoveryReport
    deleted_segments: int


def open_directory(
    directory: Path, consumers: tuple[str, ...], fsync: Callable[[int], None]
) -> OpenedDirectory:
    """Lock and recover the directory (blocking; run it in a worker thread)."""
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as undo_on_error:
        lock = DirectoryLock.acquire(directory)
        undo_on_error.callback(lock.release)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        undo_on_error.callback(os.close, directory_fd)
        opened = _recover_locked(directory, consumers, fsync, lock, directory_fd)
        undo_on_error.pop_all()
        return opened


def _recover_locked(
    directory: Path,
    consumers: tuple[str, ...],
    fsync: Callable[[int], None],
    lock: DirectoryLock,
    directory_fd: int,
) -> OpenedDirectory:
    """Recovery proper, once the lock is held."""
    store = CursorStore(directory, directory_fd, fsync)
    store.remove_temp_files()
    cursors = read_cursor_files(directory)
    recovered = recover_segments(directory, fsync)
    catalog = SegmentCatalog(recovered.segments, recovered.last_seq)
    newest_cursor = max(cursors.values(), default=0)
    _ensure_active_segment(catalog, directory, newest_cursor, directory_fd, fsync)
    for name in consumers:
        if name not in cursors:
            # A new consumer starts at the oldest record kept: it must see all of them.
            cursors[name] = (catalog.first_seq or catalog.last_seq + 1) - 1
            store.save(name, cursors[name])
    deleted = catalog.behind(min(cursors.values())) if cursors else []
    delete_segment_files([segment.path for segment in deleted])
    catalog.drop(deleted)
    appender = SegmentAppender(catalog.active.path, directory_fd, fsync)
    return OpenedDirectory(
        lock, directory_fd, catalog, cursors, store, appender, recovered.report, len(deleted)
    )


def _ensure_active_segment(
    catalog: SegmentCatalog,
    directory: Path,
    newest_cursor: int,
    directory_fd: int,
    fsync: Callable[[int], None],
) -> None:
    """Create the segment to append to when there is none, or when numbering must jump.

    A cursor past the newest record means records it had consumed were damaged and cut off
    since; numbering continues after the cursor, so no new record reuses a number the
    consumer would skip. The missing numbers stay visible as a loss to any consumer behind.
    """
    next_seq = max(catalog.last_seq, newest_cursor) + 1
    if catalog.segments and next_seq == catalog.last_seq + 1:
        return
    segment_path = directory / segment_name(next_seq)
    os.close(os.open(segment_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    fsync(directory_fd)
    catalog.add(Segment(next_seq, segment_path, 0, []))
    catalog.last_seq = next_seq - 1
