"""`edge-node queue status`, `queue tail` and `queue verify`: the usage queues read from
outside, as JSON."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from edge_node.cli.support import emit, positive_int, require_data_dir
from edge_node.config import Config
from edge_node.queue import QueueStatus, inspect_queue, tail_records, verify_queue
from edge_node.usage.event import UsageEvent


def add_queue_commands(commands: Any) -> None:
    """Register the `queue` command on the CLI's subparsers."""
    queue = commands.add_parser("queue", help="inspect the usage queue").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    queue.add_parser("status", help="depth, bytes, oldest event age, cursors").set_defaults(
        handler=_queue_status
    )
    tail = queue.add_parser("tail", help="print the newest usage events")
    tail.add_argument(
        "-n", type=positive_int, default=10, metavar="N", help="how many events (default 10)"
    )
    tail.set_defaults(handler=_queue_tail)
    queue.add_parser(
        "verify",
        help="check every record's checksum; exit 1 naming damaged segments (copied to"
        " quarantine/, never deleted)",
    ).set_defaults(handler=_queue_verify)


def queue_directories(config: Config) -> list[Path]:
    """The worker processes' queue directories under the data directory, in order."""
    root = config.data_path / "queue"
    return sorted(path for path in root.glob("worker-*") if path.is_dir())


def _queue_status(config: Config, args: argparse.Namespace) -> int:
    require_data_dir(config)
    now = time.time_ns() // 1_000_000
    return emit(
        [
            {"directory": str(directory), **queue_status_document(inspect_queue(directory), now)}
            for directory in queue_directories(config)
        ]
    )


def queue_status_document(status: QueueStatus, now_ms: int) -> dict[str, Any]:
    """A queue's status for operators: depth and the age of the oldest unconsumed event."""
    consumers = {
        name: {
            "cursor": consumer.cursor,
            "depth": consumer.depth,
            "oldest_unconsumed_age_seconds": None
            if consumer.oldest_unconsumed_timestamp_ms is None
            else round((now_ms - consumer.oldest_unconsumed_timestamp_ms) / 1000, 3),
        }
        for name, consumer in status.consumers.items()
    }
    return {
        "first_seq": status.first_seq,
        "last_seq": status.last_seq,
        "bytes": status.bytes,
        "segments": status.segment_count,
        "depth": max((c.depth for c in status.consumers.values()), default=0),
        "consumers": consumers,
    }


def _queue_tail(config: Config, args: argparse.Namespace) -> int:
    require_data_dir(config)
    records = [
        (record.timestamp_ms, record.seq, directory, record)
        for directory in queue_directories(config)
        for record in tail_records(directory, args.n)
    ]
    for _, seq, directory, record in sorted(records, key=lambda r: r[:2])[-args.n :]:
        event = UsageEvent.decode(record.payload)
        sys.stdout.write(
            orjson.dumps({"queue": directory.name, "seq": seq, **asdict(event)}).decode() + "\n"
        )
    return 0


EXIT_DAMAGED = 1


def _queue_verify(config: Config, args: argparse.Namespace) -> int:
    """One JSON line per damaged run; exit 1 when there is any."""
    require_data_dir(config)
    damaged = [run for directory in queue_directories(config) for run in verify_queue(directory)]
    for run in damaged:
        line = {"segment": str(run.segment), "offset": run.offset, "bytes": run.size}
        sys.stdout.write(orjson.dumps({**line, "copy": str(run.copy)}).decode() + "\n")
    if damaged:
        print(f"edge-node: {len(damaged)} damaged runs in the usage queue", file=sys.stderr)
        return EXIT_DAMAGED
    return 0
