"""The on-disk record frame: encoding a record and checking one at a buffer position.

A frame is a 32-byte little-endian header followed by the payload:

    offset  size  field
         0     4  magic b"\\xfeQR\\xff"
         4     4  crc32 of bytes 8.. (length, batch index, sequence, timestamp, payload)
         8     4  payload length
        12     4  batch index: position of the record in its group commit (0 = first)
        16     8  sequence number, u64, +1 per record across the whole queue
        24     8  timestamp_ms, u64, milliseconds since the Unix epoch
        32     n  payload
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# 0xFE and 0xFF never occur in UTF-8, so a JSON payload can never contain the magic and
# fool a reader that searches for the next frame after damaged bytes.
MAGIC = b"\xfeQR\xff"
_PREFIX = struct.Struct("<4sI")
_BODY = struct.Struct("<IIQQ")
HEADER_SIZE = _PREFIX.size + _BODY.size
# A length field beyond this is damage, not a record: it stops a flipped bit in the length
# from making a reader wait for gigabytes that will never come.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One durable record as consumers and operators see it."""

    seq: int
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame found in a segment, with where it sits."""

    offset: int
    seq: int
    batch_index: int
    timestamp_ms: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes the frame occupies on disk."""
        return HEADER_SIZE + len(self.payload)

    @property
    def batch_first_seq(self) -> int:
        """Sequence number of the first record of the group commit this frame was part of."""
        return self.seq - self.batch_index

    def record(self) -> Record:
        """The frame without its storage details."""
        return Record(self.seq, self.timestamp_ms, self.payload)


def frame_size(payload_length: int) -> int:
    """Bytes a record with a payload of this length occupies on disk."""
    return HEADER_SIZE + payload_length


def encode_into(
    parts: list[bytes], payload: bytes, seq: int, batch_index: int, timestamp_ms: int
) -> None:
    """Append the frame's pieces to `parts`, so a whole batch is joined once."""
    body = _BODY.pack(len(payload), batch_index, seq, timestamp_ms)
    crc = zlib.crc32(payload, zlib.crc32(body))
    parts.append(_PREFIX.pack(MAGIC, crc))
    parts.append(body)
    parts.append(payload)


def encode_frame(payload: bytes, seq: int, batch_index: int = 0, timestamp_ms: int = 0) -> bytes:
    """One frame as bytes."""
    parts: list[bytes] = []
    encode_into(parts, payload, seq, batch_index, timestamp_ms)
    return b"".join(parts)


def declared_size(buf: bytes, pos: int) -> int | None:
    """Total frame size the header at `pos` claims, or None if the header is not a frame's.

    The caller must have HEADER_SIZE bytes available at `pos`.
    """
    magic, _crc = _PREFIX.unpack_from(buf, pos)
    if magic != MAGIC:
        return None
    (length,) = struct.unpack_from("<I", buf, pos + _PREFIX.size)
    if length > MAX_PAYLOAD_BYTES:
        return None
    return HEADER_SIZE + int(length)


def decode_frame(buf: bytes, pos: int, file_offset: int) -> Frame | None:
    """The frame at `pos` if its whole extent is in `buf` and its checksum holds, else None."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    size = declared_size(buf, pos)
    if size is None or len(buf) - pos < size:
        return None
    _magic, crc = _PREFIX.unpack_from(buf, pos)
    end = pos + size
    if zlib.crc32(memoryview(buf)[pos + _PREFIX.size : end]) != crc:
        return None
    _length, batch_index, seq, timestamp_ms = _BODY.unpack_from(buf, pos + _PREFIX.size)
    payload = buf[pos + HEADER_SIZE : end]
    return Frame(file_offset, seq, batch_index, timestamp_ms, payload)
