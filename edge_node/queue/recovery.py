"""Recovery at open: find the live segments and cut a torn tail off the last one.

Only the last segment can end in a torn write: a segment is fsynced before the next one is
created. And only the last group commit in it can be torn: a batch is written only after
the previous batch's fsync returned. So damage is a torn tail when every good frame after
it belongs to the batch the damage is in (the batch index in each frame says where its
batch began); such records were never acknowledged and are cut off. Damage followed by a
frame of a later batch sat in a batch that was fsynced: that is corruption in the middle,
which is kept and counted, and readers stop at it.

A cut is never silent: it is logged with the segment, the offset and the records and bytes
cut, and the bytes cut are first copied to `quarantine/<segment>.<offset>.tail` in the queue
directory, so that what was there can still be looked at. (Recovery cannot tell a torn write
from damage to the last, acknowledged batch: both look the same.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.queue.framing import MAGIC, Frame
from edge_node.queue.scanning import Damage, scan_segment
from edge_node.queue.segments import Segment, list_segment_files

log = logging.getLogger(__name__)
QUARANTINE_DIRECTORY = "quarantine"


@dataclass(slots=True)
class RecoveryReport:
    """What recovery found in the last segment."""

    truncated_records: int = 0
    truncated_bytes: int = 0
    damaged: list[tuple[Path, Damage]] = field(default_factory=list)


@dataclass(slots=True)
class RecoveredSegments:
    """The segments on disk after recovery, and the newest good sequence number among them."""

    segments: list[Segment]
    last_seq: int
    report: RecoveryReport


def recover_segments(directory: Path, fsync: Callable[[int], None]) -> RecoveredSegments:
    """List the segments, truncate a torn tail of the last one, index the last one."""
    segments = [
        Segment(first_seq, path, path.stat().st_size)
        for first_seq, path in list_segment_files(directory)
    ]
    if not segments:
        return RecoveredSegments([], 0, RecoveryReport())
    last_seq, report = _recover_last(segments[-1], fsync)
    return RecoveredSegments(segments, last_seq, report)


def _recover_last(segment: Segment, fsync: Callable[[int], None]) -> tuple[int, RecoveryReport]:
    """Truncate the segment's torn tail, if any; index what remains; return its last seq."""
    items = list(scan_segment(segment.path, 0, segment.first_seq - 1))
    cut = torn_tail_start(items, segment.first_seq - 1)
    report = RecoveryReport()
    if cut is not None:
        report.truncated_records = _count_records(segment.path, items, cut)
        report.truncated_bytes = segment.size - cut
        kept = _quarantine_tail(segment.path, cut)
        log.warning(
            "queue %s: cut a torn or damaged tail off segment %s at offset %d: %d records, "
            "%d bytes, never read by a consumer (copied to %s)",
            segment.path.parent,
            segment.path.name,
            cut,
            report.truncated_records,
            report.truncated_bytes,
            kept,
        )
        _truncate(segment.path, cut, fsync)
        segment.size = cut
    segment.index = []
    last_seq = segment.first_seq - 1
    for item in items:
        if item.offset >= segment.size:
            break
        if isinstance(item, Frame):
            segment.note_frame(item.seq, item.offset)
            last_seq = item.seq
        else:
            report.damaged.append((segment.path, item))
    return last_seq, report


def torn_tail_start(items: list[Frame | Damage], before_first: int) -> int | None:
    """Offset of the first damage that only the final, unacknowledged batch follows, if any."""
    # latest_batch[i]: the newest batch start among the good frames after items[i].
    latest_batch = [0] * len(items)
    newest = 0
    for position in range(len(items) - 1, -1, -1):
        latest_batch[position] = newest
        item = items[position]
        if isinstance(item, Frame):
            newest = max(newest, item.batch_first_seq)
    last_good = before_first
    for position, item in enumerate(items):
        if isinstance(item, Frame):
            last_good = item.seq
        elif latest_batch[position] <= last_good + 1:
            return item.offset
    return None


def _count_records(path: Path, items: list[Frame | Damage], cut: int) -> int:
    """Records lost by cutting at `cut`: good frames past it plus frame starts in the damage."""
    count = 0
    with path.open("rb") as file:
        for item in items:
            if item.offset < cut:
                continue
            if isinstance(item, Frame):
                count += 1
            else:
                file.seek(item.offset)
                count += max(1, file.read(item.size).count(MAGIC))
    return count


def _truncate(path: Path, size: int, fsync: Callable[[int], None]) -> None:
    """Cut the file to `size` bytes and make the cut durable before anything is appended."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        fsync(fd)
    finally:
        os.close(fd)


def _quarantine_tail(path: Path, cut: int) -> Path | str:
    """Copy the bytes of `path` from `cut` on into the quarantine directory; where they went
    (or why they could not be kept: the cut goes ahead, the disk may be full)."""
    target = path.parent / QUARANTINE_DIRECTORY / f"{path.name}.{cut}.tail"
    try:
        target.parent.mkdir(exist_ok=True)
        with path.open("rb") as source:
            source.seek(cut)
            target.write_bytes(source.read())
    except OSError as exc:
        return f"nowhere: {exc}"
    return target
