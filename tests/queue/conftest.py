"""Helpers for queue tests: an observable fsync, and byte-level access to segment files."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from edge_node.queue.framing import HEADER_SIZE

PAYLOAD_BYTES = 20
FRAME_BYTES = HEADER_SIZE + PAYLOAD_BYTES


def payload(n: int) -> bytes:
    """A fixed-size payload that names its record."""
    return f"event-{n:014d}".encode()


class FsyncProbe:
    """An fsync that really syncs, and records what it synced, for tests to inspect.

    `file_syncs` counts syncs of regular files, `directory_syncs` of directories;
    `synced_sizes` maps a file's inode to its size at its latest sync. `gate`, when
    cleared, holds every regular-file sync until it is set; `entered` is set whenever a
    regular-file sync starts. `failure`, when set, is raised instead of syncing files.
    """

    def __init__(self) -> None:
        self.file_syncs = 0
        self.directory_syncs = 0
        self.synced_sizes: dict[int, int] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failure: OSError | None = None
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Block every regular-file sync from now on until release()."""
        self.entered.clear()
        self.gate.clear()

    def release(self) -> None:
        """Let held syncs proceed."""
        self.gate.set()

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            os.fsync(fd)
            with self._lock:
                self.directory_syncs += 1
            return
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.failure is not None:
            raise self.failure
        os.fsync(fd)
        with self._lock:
            self.file_syncs += 1
            self.synced_sizes[info.st_ino] = info.st_size


@pytest.fixture
def probe() -> FsyncProbe:
    return FsyncProbe()


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue"


def segment_files(directory: Path) -> list[Path]:
    """Segment files, oldest first."""
    return sorted(directory.glob("*.seg"))


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place, as bit rot would."""
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))
