"""Room held back on the queue's filesystem for the records a closing queue still holds.

A queue whose writes fail on a full disk keeps its records in memory and retries until the
disk takes them; the requests they bill were answered (`usage-pending`) on the promise that
they will be. A stopping process cannot wait for the operator to free space: past its stop
timeout it is killed and the records are gone. So each queue directory holds a `reserve` file
of real blocks (`posix_fallocate`, not a sparse file) made while there is room; a queue that
is closing and cannot write gives the reserve back and writes into the room it frees. It is
made again once writing works. Segment listings ignore it (edge_node.queue.segments).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_NAME = "reserve"
RESERVE_BYTES = 1 << 20  # about 5,000 usage events
_CHUNK = b"\0" * (64 << 10)


class Reserve:
    """The reserve file of one queue directory."""

    def __init__(self, directory: Path, size: int = RESERVE_BYTES) -> None:
        self.path = directory / RESERVE_NAME
        self.size = size

    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Make the reserve if it is missing (a blocking call); False when there is no room
        for it now (nothing is left half made)."""
        if self.held():
            return True
        partial = self.path.with_name(f".{RESERVE_NAME}.tmp")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            log.warning("queue %s: no room for its reserve now: %s", self.path.parent, exc)
            return False
        return True

    def release(self) -> bool:
        """Give the reserve's blocks back to the filesystem (a blocking call); whether there
        was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning(
            "queue %s: the disk is full while closing; released its %d-byte reserve to write "
            "the records it still holds",
            self.path.parent,
            self.size,
        )
        return True


def _allocate(fd: int, size: int) -> None:
    """Real blocks for `size` bytes: fallocate where the filesystem has it, written out
    otherwise."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        written = 0
        while written < size:
            written += os.write(fd, _CHUNK[: size - written])
