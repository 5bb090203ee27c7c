"""Consumer cursors: one small checksummed file per consumer, replaced atomically on commit.

A cursor holds the sequence number of the last record the consumer has handled. The file
is one line, readable by an operator:

    edge-node-queue-cursor v1 consumer=stripe seq=1234 crc32=0a1b2c3d
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

from edge_node.queue.errors import CorruptCursor

CURSOR_SUFFIX = ".cursor"
TEMP_SUFFIX = ".cursor.tmp"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LINE = re.compile(r"(edge-node-queue-cursor v1 consumer=(\S+) seq=(\d+)) crc32=([0-9a-f]{8})\n")


def check_consumer_name(name: str) -> str:
    """The name, if it can safely be part of a file name; ValueError otherwise."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"consumer name {name!r} must be 1-64 characters of letters, digits, '_' or '-'"
        )
    return name


def format_cursor(consumer: str, seq: int) -> bytes:
    """The cursor file's content."""
    body = f"edge-node-queue-cursor v1 consumer={consumer} seq={seq}"
    return f"{body} crc32={zlib.crc32(body.encode()):08x}\n".encode()


def parse_cursor(consumer: str, path: Path, content: bytes) -> int:
    """The sequence number in a cursor file's content; CorruptCursor if it cannot be trusted."""
    match = _LINE.fullmatch(content.decode("utf-8", errors="replace"))
    if match is None:
        raise CorruptCursor(consumer, path, f"unrecognised content {content[:80]!r}")
    body, named, seq, crc = match.groups()
    if int(crc, 16) != zlib.crc32(body.encode()):
        raise CorruptCursor(consumer, path, "checksum mismatch")
    if named != consumer:
        raise CorruptCursor(consumer, path, f"the file names consumer {named!r}")
    return int(seq)


def read_cursor_files(directory: Path) -> dict[str, int]:
    """Every consumer's cursor found in the directory; temp files are ignored. Read-only."""
    cursors = {}
    for path in sorted(directory.glob(f"*{CURSOR_SUFFIX}")):
        consumer = path.name.removesuffix(CURSOR_SUFFIX)
        cursors[consumer] = parse_cursor(consumer, path, path.read_bytes())
    return cursors


class CursorStore:
    """Writes cursor files so that a crash leaves either the old cursor or the new one."""

    def __init__(self, directory: Path, directory_fd: int, fsync: Callable[[int], None]):
        self._directory = directory
        self._directory_fd = directory_fd
        self._fsync = fsync

    def remove_temp_files(self) -> list[Path]:
        """Delete temp files left by a crash mid-commit.

        The live cursor each was to replace is still in place, so nothing is lost.
        """
        leftovers = sorted(self._directory.glob(f"*{TEMP_SUFFIX}"))
        for path in leftovers:
            path.unlink()
        return leftovers

    def save(self, consumer: str, seq: int) -> None:
        """Durably replace the consumer's cursor: write a temp file, fsync, rename, fsync dir."""
        live = self._directory / f"{consumer}{CURSOR_SUFFIX}"
        temp = self._directory / f"{consumer}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, format_cursor(consumer, seq))
            self._fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, live)
        self._fsync(self._directory_fd)
