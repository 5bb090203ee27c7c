"""The running daemon's runtime file: where it listens, its pid and start time, for `status`.

`serve` writes `runtime.json` in the data directory once it listens (to a temporary name,
fsynced, then renamed, so a reader sees the old file or the new one, never half of one) and
removes it when it stops cleanly. A file left by a daemon that was killed names a pid that
is gone: readers call that stale, not running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edge_node import __version__
from edge_node.clock import format_us, now_us

FILE_NAME = "runtime.json"


@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    """What a serving daemon says about itself. Times are microseconds since the epoch."""

    pid: int
    node_id: str
    listen: tuple[str, ...]
    started_at: int
    version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "node_id": self.node_id,
            "listen": list(self.listen),
            "started_at": format_us(self.started_at),
            "started_at_us": self.started_at,
            "version": self.version,
        }


class RuntimeFile:
    """The runtime file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def publish(self, node_id: str, listen: Sequence[str]) -> RuntimeRecord:
        """Write this process's record atomically and durably; returns it."""
        record = RuntimeRecord(os.getpid(), node_id, tuple(listen), now_us(), __version__)
        write_json_atomically(self.path, record.to_json())
        return record

    def remove(self) -> None:
        """Delete the file if this process wrote it (a newer daemon's file is left alone)."""
        record = self.read()
        if record is not None and record.pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def read(self) -> RuntimeRecord | None:
        """The record on disk, or None when there is none or it cannot be parsed."""
        try:
            document = orjson.loads(self.path.read_bytes())
            return RuntimeRecord(
                pid=int(document["pid"]),
                node_id=str(document["node_id"]),
                listen=tuple(str(url) for url in document["listen"]),
                started_at=int(document["started_at_us"]),
                version=str(document["version"]),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write `document` to `path` through a temporary file, fsynced, then renamed: a reader
    sees the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
