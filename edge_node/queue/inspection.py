"""Read-only views of a queue directory from outside the process that owns it.

These take no lock and change nothing, so an operator can run them while the daemon is
appending. What they see is the page cache: the newest records shown may still be waiting
for their fsync, and a batch being written is ignored until it is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edge_node.queue.cursors import read_cursor_files
from edge_node.queue.errors import QueueError
from edge_node.queue.framing import Record
from edge_node.queue.reader import read_tail
from edge_node.queue.recovery import QUARANTINE_DIRECTORY
from edge_node.queue.scanning import Damage, scan_segment
from edge_node.queue.segments import Segment, SegmentCatalog, list_segment_files
from edge_node.queue.status import QueueStatus, describe

_T = TypeVar("_T")


def inspect_queue(directory: str | os.PathLike[str]) -> QueueStatus:
    """Status of the queue in `directory`: bytes, segments, and every cursor on disk."""
    path = Path(directory)
    return retrying(lambda: describe(path, catalog_on_disk(path), read_cursor_files(path), None))


def tail_records(directory: str | os.PathLike[str], count: int) -> list[Record]:
    """The newest `count` complete records in `directory`, oldest first."""
    path = Path(directory)
    return retrying(lambda: read_tail(catalog_on_disk(path), count))


def catalog_on_disk(directory: Path) -> SegmentCatalog:
    """The segments as they are on disk now; only the last one is scanned (for its end)."""
    if not directory.is_dir():
        raise QueueError(f"{directory} is not a queue directory: it does not exist")
    segments = [
        Segment(first_seq, path, path.stat().st_size)
        for first_seq, path in list_segment_files(directory)
    ]
    last_seq = segments[-1].rescan() if segments else 0
    return SegmentCatalog(segments, last_seq)


def retrying(view: Callable[[], _T]) -> _T:
    """Run `view`, again if the owner deleted a consumed segment while it was reading."""
    for attempt in range(3):
        try:
            return view()
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class DamagedRun:
    """Bytes of a segment that hold no good record, and where a copy of the segment is kept."""

    segment: Path
    offset: int
    size: int
    copy: Path


def verify_queue(directory: str | os.PathLike[str]) -> list[DamagedRun]:
    """Check every record of every segment in `directory` against its checksum.

    Each damaged segment is copied once into `quarantine/` beside the segments (nothing is
    deleted or changed). The last segment's end is left out when it runs to the end of the
    file: that is a batch being written now, or a torn tail the next open cuts (and keeps).
    """
    path = Path(directory)
    if not path.is_dir():
        raise QueueError(f"{path} is not a queue directory: it does not exist")
    found: list[DamagedRun] = []
    segments = list_segment_files(path)
    for position, (first_seq, segment) in enumerate(segments):
        try:
            damage = [
                item for item in scan_segment(segment, 0, first_seq - 1) if isinstance(item, Damage)
            ]
            if damage and position == len(segments) - 1:
                size = segment.stat().st_size
                damage = [run for run in damage if run.end < size]
        except FileNotFoundError:
            continue  # consumed and deleted while being read
        if damage:
            copy = _quarantine(segment)
            found += [DamagedRun(segment, run.offset, run.size, copy) for run in damage]
    return found


def _quarantine(segment: Path) -> Path:
    copy = segment.parent / QUARANTINE_DIRECTORY / segment.name
    if not copy.exists():
        copy.parent.mkdir(exist_ok=True)
        shutil.copy2(segment, copy)
    return copy
