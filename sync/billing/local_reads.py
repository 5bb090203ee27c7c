"""Reading billing's local state beside the daemon, changing nothing and waiting on nothing:
node.sqlite opened read-only, and the usage queues' records billing has not planned yet, read
without the queue's lock (edge_node.queue.inspect_queue, tail_records).

Used by `edge-node billing reconcile` (sync/billing/reconcile.py) and by the tenant's usage
API (sync/billing/usage_view.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from edge_node.errors import NotAUsageEvent
from edge_node.node_database import values_named
from edge_node.queue import inspect_queue, tail_records
from edge_node.usage.event import BillableUsage, read_billable
from edge_node.usage.meter import BILLING_CONSUMER
from sync.billing.queue_positions import PLANNED_THROUGH


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """node.sqlite, read-only; FileNotFoundError when no node has run in its directory."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: no node has run in this data directory")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        yield conn


def planned_through(conn: sqlite3.Connection) -> dict[str, int]:
    """Per queue name (`worker-N`), the last record billing planned into the ledger."""
    return {
        name.removeprefix(PLANNED_THROUGH): int(value)
        for name, value in values_named(conn, PLANNED_THROUGH)
    }


def queue_directories(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "queue").glob("worker-*"))


def unplanned(directory: Path, planned: int) -> Iterator[BillableUsage | NotAUsageEvent]:
    """The records of a queue after the last one planned (and after billing's cursor)."""
    status = inspect_queue(directory)
    consumer = status.consumers.get(BILLING_CONSUMER)
    after = max(planned, consumer.cursor if consumer else 0)
    if status.last_seq <= after:
        return
    for record in tail_records(directory, status.last_seq - after):
        if record.seq > after:
            yield read_billable(record.payload)
