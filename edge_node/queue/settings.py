"""The queue's tunables, validated once with messages an operator can act on."""

from __future__ import annotations

from dataclasses import dataclass

from edge_node.queue.framing import HEADER_SIZE


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Size limits and batching of one queue directory.

    segment_bytes: a segment is rolled before a record would take it past this size
        (default 16 MiB); whole segments are the unit of deletion.
    max_bytes: bound on the bytes of all live segments (default 1 GiB); an append that
        would exceed it fails with QueueFull. At least twice segment_bytes, because the
        segment being written is kept even once every consumer has read it.
    commit_interval: seconds a group commit waits for more appends before it writes
        (default 0: a batch is whatever arrived while the previous fsync ran).
    """

    segment_bytes: int = 16 * 1024 * 1024
    max_bytes: int = 1024 * 1024 * 1024
    commit_interval: float = 0.0

    def __post_init__(self) -> None:
        if self.segment_bytes < 4 * HEADER_SIZE:
            raise ValueError(
                f"queue segment_bytes must be at least {4 * HEADER_SIZE}, got {self.segment_bytes}"
            )
        if self.max_bytes < 2 * self.segment_bytes:
            raise ValueError(
                "queue max_bytes must be at least twice segment_bytes "
                f"({2 * self.segment_bytes}), got {self.max_bytes}"
            )
        if not 0 <= self.commit_interval <= 1:
            raise ValueError(
                f"queue commit_interval must be between 0 and 1 second, got {self.commit_interval}"
            )
