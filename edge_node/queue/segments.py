"""Segment files: their names, the catalog of live segments, and each one's sparse index."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.queue.framing import Frame
from edge_node.queue.scanning import scan_segment

SEGMENT_SUFFIX = ".seg"
# One index entry per 64 KiB keeps a lookup to a short scan while a full 1 GiB queue
# costs only ~16k entries of memory.
INDEX_STRIDE_BYTES = 64 * 1024


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has this sequence number."""
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segment_files(directory: Path) -> list[tuple[int, Path]]:
    """(first sequence number, path) of every segment file in the directory, oldest first."""
    found = []
    for entry in os.scandir(directory):
        stem, dot, suffix = entry.name.partition(".")
        if dot and f".{suffix}" == SEGMENT_SUFFIX and stem.isdigit() and len(stem) == 20:
            found.append((int(stem), Path(entry.path)))
    return sorted(found)


@dataclass(slots=True)
class Segment:
    """One segment file: where it starts, how many durable bytes it holds, where records sit.

    `index` lists (sequence number, offset) of one record per INDEX_STRIDE_BYTES, or is None
    until the segment has been scanned once.
    """

    first_seq: int
    path: Path
    size: int
    index: list[tuple[int, int]] | None = None

    def note_frame(self, seq: int, offset: int) -> None:
        """Remember where a record sits if it is a stride past the last remembered one."""
        if offset >= self.next_noted_offset():
            assert self.index is not None
            self.index.append((seq, offset))

    def next_noted_offset(self) -> int:
        """The offset from which the next record is remembered (0 while none is): a writer
        planning a batch of records notes only those from there on, and looks again after."""
        if self.index is None:
            self.index = []
        return self.index[-1][1] + INDEX_STRIDE_BYTES if self.index else 0

    def position_of(self, seq: int) -> tuple[int, int]:
        """(sequence number, offset) of the closest indexed record at or before `seq`."""
        index = self.index or []
        at = bisect.bisect_right(index, seq, key=lambda entry: entry[0])
        return index[at - 1] if at else (self.first_seq, 0)

    def ensure_index(self) -> None:
        """Build the index by scanning the segment, unless it already has one."""
        if self.index is None:
            self.rescan()

    def rescan(self) -> int:
        """Rebuild the index from the file; return the sequence number of its last good record."""
        last_seq = self.first_seq - 1
        fresh = Segment(self.first_seq, self.path, self.size)
        for item in scan_segment(self.path, 0, self.first_seq - 1, self.size):
            if isinstance(item, Frame):
                fresh.note_frame(item.seq, item.offset)
                last_seq = item.seq
        # Assigned whole so that a reader on another thread sees either no index or all of it.
        self.index = fresh.index or []
        return last_seq


@dataclass(slots=True)
class SegmentCatalog:
    """The live segments in sequence order (the last one is appended to) and the newest seq."""

    segments: list[Segment]
    last_seq: int
    _firsts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._firsts = [segment.first_seq for segment in self.segments]

    @property
    def active(self) -> Segment:
        """The segment new records go to."""
        return self.segments[-1]

    @property
    def first_seq(self) -> int | None:
        """Sequence number of the oldest record still on disk, or None if there is none."""
        if not self.segments or self.segments[0].first_seq > self.last_seq:
            return None
        return self.segments[0].first_seq

    @property
    def total_bytes(self) -> int:
        """Bytes held by all live segments."""
        return sum(segment.size for segment in self.segments)

    def snapshot(self) -> SegmentCatalog:
        """A copy of the list, safe to hand to a reader thread while this one keeps changing."""
        return SegmentCatalog(list(self.segments), self.last_seq)

    def locate(self, seq: int) -> int | None:
        """Position in `segments` of the segment that holds `seq`, None if before them all."""
        at = bisect.bisect_right(self._firsts, seq)
        return at - 1 if at else None

    def end_of(self, position: int) -> int:
        """The sequence number that follows the last record of the segment at `position`."""
        if position + 1 < len(self.segments):
            return self.segments[position + 1].first_seq
        return self.last_seq + 1

    def behind(self, seq: int) -> list[Segment]:
        """Segments, never the active one, whose every record is at or before `seq`."""
        return [
            segment
            for position, segment in enumerate(self.segments[:-1])
            if self.end_of(position) - 1 <= seq
        ]

    def add(self, segment: Segment) -> None:
        """Make a newly created segment the active one."""
        self.segments.append(segment)
        self._firsts.append(segment.first_seq)

    def drop(self, gone: list[Segment]) -> None:
        """Forget segments whose files were deleted."""
        doomed = {id(segment) for segment in gone}
        self.segments = [segment for segment in self.segments if id(segment) not in doomed]
        self._firsts = [segment.first_seq for segment in self.segments]


def delete_segment_files(paths: list[Path]) -> None:
    """Unlink segment files that every consumer has passed.

    The directory is not fsynced: if a crash undoes a deletion, the segment is still behind
    every durable cursor and the next open deletes it again.
    """
    for path in paths:
        path.unlink(missing_ok=True)
