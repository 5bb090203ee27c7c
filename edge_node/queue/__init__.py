"""Durable write-ahead queue of usage events: group-committed appends, cursors, retention.

The package imports nothing else from edge_node and only the standard library. How it
works and what it guarantees: docs/queue.md.
"""

from edge_node.queue.errors import (
    CorruptCursor,
    CorruptRecord,
    QueueClosed,
    QueueCorruption,
    QueueError,
    QueueFull,
    QueueLocked,
    QueueWriteError,
)
from edge_node.queue.follower import ConsumerQueue, QueueFollower
from edge_node.queue.framing import MAX_PAYLOAD_BYTES, Record
from edge_node.queue.inspection import DamagedRun, inspect_queue, tail_records, verify_queue
from edge_node.queue.settings import QueueSettings
from edge_node.queue.status import ConsumerStatus, QueueStats, QueueStatus
from edge_node.queue.wal import WriteAheadQueue, open_queue

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "ConsumerQueue",
    "ConsumerStatus",
    "CorruptCursor",
    "CorruptRecord",
    "DamagedRun",
    "QueueClosed",
    "QueueCorruption",
    "QueueError",
    "QueueFollower",
    "QueueFull",
    "QueueLocked",
    "QueueSettings",
    "QueueStats",
    "QueueStatus",
    "QueueWriteError",
    "Record",
    "WriteAheadQueue",
    "inspect_queue",
    "open_queue",
    "tail_records",
    "verify_queue",
]
