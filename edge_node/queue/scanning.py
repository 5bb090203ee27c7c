"""Walking a segment file frame by frame, and finding the next good frame after damage."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge_node.queue.framing import HEADER_SIZE, MAGIC, Frame, declared_size, decode_frame

# Big enough that a sequential read costs one syscall per ~1,400 small records.
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Damage:
    """A run of bytes in a segment that holds no good frame."""

    offset: int
    end: int

    @property
    def size(self) -> int:
        """Length of the damaged run in bytes."""
        return self.end - self.offset


def scan_segment(
    path: Path, start: int = 0, after_seq: int = 0, limit: int | None = None
) -> Generator[Frame | Damage, None, None]:
    """Yield, in file order, the good frames and damaged runs of a segment from `start`.

    A good frame is complete, passes its checksum, and carries a sequence number above
    `after_seq` and above every good frame before it. Whatever lies between good frames is
    reported as one Damage. Nothing at or beyond `limit` (default: the file size) is read, so
    a reader never sees bytes a concurrent writer has not yet made durable.
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        end = size if limit is None else min(limit, size)
        window = _Window(file, start, end)
        pos, last_seq = start, after_seq
        while pos < end:
            frame = window.frame_at(pos)
            if frame is not None and frame.seq > last_seq:
                yield frame
                pos, last_seq = pos + frame.size, frame.seq
                continue
            resumed = window.next_good(pos + 1, last_seq)
            yield Damage(pos, end if resumed is None else resumed.offset)
            if resumed is None:
                return
            pos = resumed.offset


class _Window:
    """A forward-only read buffer over bytes [start, end) of an open segment file."""

    def __init__(self, file: BinaryIO, start: int, end: int):
        file.seek(start)
        self._file = file
        self._base = start
        self._end = end
        self._buf = b""

    def frame_at(self, pos: int) -> Frame | None:
        """The good frame starting exactly at `pos`, if there is one."""
        if not self._load(pos, HEADER_SIZE):
            return None
        size = declared_size(self._buf, pos - self._base)
        if size is None or not self._load(pos, size):
            return None
        return decode_frame(self._buf, pos - self._base, pos)

    def next_good(self, pos: int, after_seq: int) -> Frame | None:
        """The first good frame at or after `pos` whose sequence number exceeds `after_seq`."""
        # Damage is rare, so the rest of the range is simply read whole.
        self._load(pos, self._end - pos)
        rel = pos - self._base
        while (rel := self._buf.find(MAGIC, rel)) != -1:
            frame = decode_frame(self._buf, rel, self._base + rel)
            if frame is not None and frame.seq > after_seq:
                return frame
            rel += 1
        return None

    def _load(self, pos: int, count: int) -> bool:
        """Make bytes [pos, pos + count) available; False if they run past the end."""
        buffered_end = self._base + len(self._buf)
        if pos + count <= buffered_end:
            return True
        if pos + count > self._end:
            return False
        if pos > buffered_end:
            self._file.seek(pos)
        keep = self._buf[pos - self._base :]
        want = min(max(count, CHUNK_BYTES), self._end - pos)
        self._buf = keep + self._file.read(want - len(keep))
        self._base = pos
        return len(self._buf) >= count
