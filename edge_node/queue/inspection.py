"""Read-only views of a queue directory from outside the process that owns it.

These take no lock and change nothing, so an operator can run them while the daemon is
appending. What they see is the page cache: the newest records shown may still be waiting
for their fsync, and a batch being written is ignored until it is complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge_node.queue.cursors import read_cursor_files
from edge_node.queue.errors import QueueError
from edge_node.queue.framing import Record
from edge_node.queue.reader import read_tail
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
