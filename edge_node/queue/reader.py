"""Reading a run of records by sequence number across segments, noticing any that are lost.

Sequence numbers are contiguous, so a reader knows which record must come next; when the
next good frame carries a later number, or a segment ends early, the records in between
are lost (their bytes are damaged or gone) and the reader says so instead of skipping them.
These functions do blocking file I/O: the queue calls them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_node.queue.framing import Frame, Record
from edge_node.queue.scanning import Damage, scan_segment
from edge_node.queue.segments import Segment, SegmentCatalog


@dataclass(frozen=True, slots=True)
class Loss:
    """Records `first_seq`..`last_seq` should be in `segment` near `offset` but are not."""

    segment: Path
    offset: int
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class ReadResult:
    """The records read, the damaged runs crossed on the way, and a loss that stopped it."""

    records: list[Record] = field(default_factory=list)
    damage: list[tuple[Path, Damage]] = field(default_factory=list)
    loss: Loss | None = None


def read_records(
    catalog: SegmentCatalog,
    start_seq: int,
    max_records: int,
    end_seq: int,
    *,
    stop_at_loss: bool = True,
) -> ReadResult:
    """Up to `max_records` records with sequence numbers in [start_seq, end_seq], in order.

    With `stop_at_loss`, reading stops at the first lost record in that range and the result
    carries the loss; without it, lost records are passed over (for operator views).
    """
    result = ReadResult()
    if not catalog.segments or start_seq > end_seq:
        return result
    position = catalog.locate(start_seq)
    if position is None:
        # Records older than the oldest segment are gone: never start silently after them.
        first = catalog.segments[0]
        if stop_at_loss:
            result.loss = Loss(first.path, 0, start_seq, first.first_seq - 1)
            return result
        position = 0
    walk = _Walk(result, start_seq, max_records, end_seq, stop_at_loss)
    segment = catalog.segments[position]
    segment.ensure_index()
    seq_at, offset = segment.position_of(start_seq)
    walk.expected = seq_at
    while not walk.done and position < len(catalog.segments):
        segment = catalog.segments[position]
        walk.segment(segment, offset, catalog.end_of(position))
        position, offset = position + 1, 0
    return result


def read_tail(catalog: SegmentCatalog, count: int) -> list[Record]:
    """The newest `count` durable records that can be read, oldest first."""
    first_seq = catalog.first_seq
    if first_seq is None or count < 1:
        return []
    start = max(first_seq, catalog.last_seq - count + 1)
    return read_records(catalog, start, count, catalog.last_seq, stop_at_loss=False).records


@dataclass(slots=True)
class _Walk:
    """The state of one read as it moves through segments."""

    result: ReadResult
    start_seq: int
    max_records: int
    end_seq: int
    stop_at_loss: bool
    expected: int = 0
    done: bool = False

    def segment(self, segment: Segment, offset: int, next_seq: int) -> None:
        """Read from `offset` of `segment`, whose records end just before `next_seq`."""
        damaged_at: int | None = None
        items = scan_segment(segment.path, offset, self.expected - 1, segment.size)
        for item in items:
            if isinstance(item, Damage):
                self.result.damage.append((segment.path, item))
                damaged_at = item.offset if damaged_at is None else damaged_at
                continue
            if item.seq > self.expected:
                self._lost(segment, item.offset if damaged_at is None else damaged_at, item.seq - 1)
            damaged_at = None
            if self.done or not self._take(item):
                items.close()
                return
        if self.expected < next_seq:
            self._lost(segment, segment.size if damaged_at is None else damaged_at, next_seq - 1)

    def _take(self, frame: Frame) -> bool:
        """Keep the frame if it is wanted; False once the read is complete."""
        self.expected = frame.seq + 1
        if frame.seq > self.end_seq:
            self.done = True
            return False
        if frame.seq >= self.start_seq:
            self.result.records.append(frame.record())
        self.done = len(self.result.records) >= self.max_records or frame.seq >= self.end_seq
        return not self.done

    def _lost(self, segment: Segment, offset: int, last_seq: int) -> None:
        """Note that records from `expected` to `last_seq` cannot be read."""
        loss = Loss(segment.path, offset, self.expected, last_seq)
        wanted = loss.first_seq <= self.end_seq and loss.last_seq >= self.start_seq
        if wanted and self.stop_at_loss:
            self.result.loss = loss
            self.done = True
        self.expected = last_seq + 1
