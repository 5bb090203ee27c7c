"""Exceptions raised by the write-ahead queue, each worded for the operator who reads it.

QueueError                    base: anything the queue refuses or cannot do
 ├── QueueFull                transient: consumers are behind; retry later (serve 503)
 ├── QueueClosed              the queue was closed; nothing more can be appended or read
 ├── QueueLocked              another process owns the directory; fix the deployment
 ├── QueueWriteError          a write kept failing until the queue closed
 └── QueueCorruption          permanent: bytes on disk are damaged; a human must decide
      ├── CorruptRecord       a consumer reached records that cannot be read
      └── CorruptCursor       a consumer's cursor file cannot be trusted
"""

from __future__ import annotations

from pathlib import Path


class QueueError(Exception):
    """Base class of every error the write-ahead queue raises."""


class QueueFull(QueueError):
    """An append would push the live segments past max_bytes; nothing was written or dropped."""

    def __init__(self, directory: Path, used_bytes: int, max_bytes: int, slowest: str | None):
        self.directory = directory
        self.used_bytes = used_bytes
        self.max_bytes = max_bytes
        self.slowest_consumer = slowest
        behind = f"consumer {slowest!r} is furthest behind" if slowest else "no consumer declared"
        super().__init__(
            f"queue {directory} is full ({used_bytes} of {max_bytes} bytes): {behind}; "
            "the append was refused and nothing was dropped; it succeeds again once consumers "
            "commit, or raise queue max_bytes"
        )


class QueueClosed(QueueError):
    """The queue was closed (or is closing); open it again to use it."""

    def __init__(self, directory: Path):
        self.directory = directory
        super().__init__(f"queue {directory} is closed; open it again to append or read")


class QueueLocked(QueueError):
    """Another process (or another open in this one) holds the directory's exclusive lock."""

    def __init__(self, directory: Path, owner_pid: int | None):
        self.directory = directory
        self.owner_pid = owner_pid
        owner = f"process {owner_pid}" if owner_pid else "another process"
        super().__init__(
            f"queue {directory} is already open in {owner}; each worker process needs its own "
            "queue directory (`edge-node queue status` reads it without opening it)"
        )


class QueueWriteError(QueueError):
    """An append was given up: its write kept failing until the queue closed."""

    def __init__(self, directory: Path, cause: BaseException):
        self.directory = directory
        super().__init__(
            f"writing queue {directory} failed ({cause!r}) until the queue closed; the append "
            "was not acknowledged, and its record is on disk only if the last attempt wrote it"
        )


class QueueCorruption(QueueError):
    """Bytes on disk are damaged; the queue stops rather than guess."""


class CorruptRecord(QueueCorruption):
    """Records a consumer needs cannot be read: their bytes fail the checksum or are missing.

    `sequence`..`last_sequence` is the damaged range. Records before it were delivered; the
    consumer stays stuck here until someone decides, after looking, to skip the range with
    `commit(consumer, last_sequence)`.
    """

    def __init__(
        self,
        consumer: str,
        segment: Path,
        offset: int,
        sequence: int,
        last_sequence: int,
    ):
        self.consumer = consumer
        self.segment = segment
        self.offset = offset
        self.sequence = sequence
        self.last_sequence = last_sequence
        span = f"records {sequence}..{last_sequence}"
        if sequence == last_sequence:
            span = f"record {sequence}"
        super().__init__(
            f"consumer {consumer!r} cannot read {span}: segment {segment} is damaged at byte "
            f"{offset}; earlier records are intact; restore the segment from a backup, or skip "
            f"the damaged range deliberately with commit({consumer!r}, {last_sequence})"
        )


class CorruptCursor(QueueCorruption):
    """A consumer's cursor file is unreadable; the queue will not guess where it stood."""

    def __init__(self, consumer: str, path: Path, reason: str):
        self.consumer = consumer
        self.path = path
        self.reason = reason
        super().__init__(
            f"cursor file {path} of consumer {consumer!r} is corrupt ({reason}); the queue "
            "refuses to guess a position (that would drop or repeat records); restore the file, "
            "or delete it deliberately to replay from the oldest retained record"
        )
