"""The exclusive lock that makes one process the only writer of a queue directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge_node.queue.errors import QueueLocked

LOCK_FILE = "lock"


class DirectoryLock:
    """An flock(2) held on the directory's lock file for as long as the queue is open.

    The kernel drops the lock when the process dies, even on SIGKILL, so a crash never
    leaves a directory that needs manual unlocking.
    """

    def __init__(self, fd: int):
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        """Take the lock without waiting; QueueLocked if someone else holds it."""
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise QueueLocked(directory, owner) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only a hint for the error message of the next would-be opener.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_owner(fd: int) -> int | None:
    """The pid the current holder wrote into the lock file, if it is legible."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
