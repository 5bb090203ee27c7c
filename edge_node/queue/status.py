"""What operators and metrics see: counters of an open queue and a point-in-time status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_node.queue.reader import read_records
from edge_node.queue.segments import SegmentCatalog


@dataclass(slots=True)
class QueueStats:
    """Counters of an open queue since it was opened, for metrics. Read them, do not set them."""

    appended_records: int = 0
    group_commits: int = 0
    truncated_tail_records: int = 0
    truncated_tail_bytes: int = 0
    corrupt_records: int = 0
    deleted_segments: int = 0


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """Where one consumer stands."""

    name: str
    cursor: int
    depth: int
    oldest_unconsumed_timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A snapshot of a queue directory.

    `first_seq` is the oldest record still on disk (None when there is none), `last_seq` the
    newest durable one (0 before the first append). `max_bytes` is None when the status was
    taken from outside the owning process, which does not know the configured bound.
    """

    directory: str
    first_seq: int | None
    last_seq: int
    bytes: int
    max_bytes: int | None
    segment_count: int
    consumers: dict[str, ConsumerStatus]


def describe(
    directory: Path, catalog: SegmentCatalog, cursors: dict[str, int], max_bytes: int | None
) -> QueueStatus:
    """Build the status; reads one record per lagging consumer (blocking file I/O)."""
    consumers = {
        name: _consumer_status(catalog, name, cursor) for name, cursor in sorted(cursors.items())
    }
    return QueueStatus(
        directory=str(directory),
        first_seq=catalog.first_seq,
        last_seq=catalog.last_seq,
        bytes=catalog.total_bytes,
        max_bytes=max_bytes,
        segment_count=len(catalog.segments),
        consumers=consumers,
    )


def _consumer_status(catalog: SegmentCatalog, name: str, cursor: int) -> ConsumerStatus:
    """Depth and age of the oldest record the consumer has not committed."""
    depth = max(0, catalog.last_seq - cursor)
    oldest = None
    if depth:
        records = read_records(catalog, cursor + 1, 1, catalog.last_seq).records
        oldest = records[0].timestamp_ms if records else None
    return ConsumerStatus(name, cursor, depth, oldest)
