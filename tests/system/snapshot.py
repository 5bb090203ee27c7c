"""What the cluster holds right now, read from outside the daemons: every edge node's SQLite
files and queue, and the central PostgreSQL.

SQLite files are read on connections of our own while the daemons run (WAL readers never
block them), the queue without its lock, PostgreSQL directly rather than through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sync.postgres import connect
from tests.sync.support import ROW_COLUMNS, central_rows, central_scores
from tests.system.cluster import Cluster, EdgeDaemon

Row = tuple[Any, ...]  # ROW_COLUMNS: id, tenant, user, item, score, comment, created,
# updated, origin node, deleted
KEY_COLUMNS = "key_id, tenant_id, key_hash, role, revoked_at"


@dataclass(frozen=True)
class Batch:
    """A billing ledger row, as far as the checker compares it with the stand-in."""

    tenant_id: str
    value: int
    events: int
    state: str


@dataclass
class Replica:
    """One copy of the data: an edge node's, or the central database's."""

    name: str
    rows: dict[str, list[Row]] = field(default_factory=dict)  # by tenant, in id order
    scores: dict[str, list[Row]] = field(default_factory=dict)  # items with live ratings
    keys: set[Row] = field(default_factory=set)
    # Edge nodes only: what is still on its way out.
    outbox: int = 0
    registry_outbox: int = 0
    queue_depth: int = 0
    open_batches: int = 0  # billing ledger rows planned or sent
    ledger: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tenant, state) units
    ledger_events: Counter[str] = field(default_factory=Counter)  # per tenant, every state
    batches: dict[str, Batch] = field(default_factory=dict)  # every ledger row, by identifier
    foreign_rows: int = 0  # rows in a tenant's file that belong to another tenant


def recomputed_scores(rows: list[Row]) -> list[Row]:
    """(item, count, total, s1..s5) from live rows, as item_scores should hold them."""
    histograms: dict[str, list[int]] = {}
    for row in rows:
        if not row[9]:
            histograms.setdefault(row[3], [0] * 5)[row[4] - 1] += 1
    return [
        (item, sum(h), sum((i + 1) * n for i, n in enumerate(h)), *h)
        for item, h in sorted(histograms.items())
    ]


def read_edge(node: EdgeDaemon, tenant_ids: list[str]) -> Replica:
    """One edge node's replica. The queue is read before the ledger: a flush that plans,
    sends and commits while the replica is read then shows as usage still on the queue,
    never as a drained queue beside a ledger read before the batch existed."""
    replica = Replica(node.node_id)
    replica.queue_depth = node.queue_depth()
    for tenant_id in tenant_ids:
        path = node.tenant_db_path(tenant_id)
        if not path.exists():
            replica.rows[tenant_id], replica.scores[tenant_id] = [], []
            continue
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM ratings ORDER BY id").fetchall()
            replica.rows[tenant_id] = [(*row[:9], bool(row[9])) for row in rows]
            replica.foreign_rows += sum(row[1] != tenant_id for row in rows)
            replica.scores[tenant_id] = conn.execute(
                "SELECT item_id, count, total, s1, s2, s3, s4, s5 FROM item_scores"
                " WHERE count > 0 ORDER BY item_id"
            ).fetchall()
            replica.outbox += conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    with node.node_db() as conn:
        replica.keys = set(conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys").fetchall())
        replica.registry_outbox = conn.execute("SELECT count(*) FROM registry_outbox").fetchone()[0]
        for identifier, tenant_id, state, units, events in conn.execute(
            "SELECT identifier, tenant_id, state, value, events FROM billing_ledger"
        ):
            replica.batches[identifier] = Batch(tenant_id, units, events, state)
            replica.ledger[tenant_id, state] += units
            replica.ledger_events[tenant_id] += events
            if state in ("planned", "sent"):
                replica.open_batches += 1
    return replica


async def read_central(dsn: str, tenant_ids: list[str]) -> Replica:
    replica = Replica("central")
    conn = await connect(dsn)
    try:
        for tenant_id in tenant_ids:
            replica.rows[tenant_id] = await central_rows(conn, tenant_id)
            replica.scores[tenant_id] = [
                row for row in await central_scores(conn, tenant_id) if row[1] > 0
            ]
        records = await conn.fetch(
            "SELECT key_id, tenant_id::text, key_hash, role, revoked_at FROM api_keys"
        )
        replica.keys = {tuple(record) for record in records}
    finally:
        await conn.close()
    return replica


async def read_cluster(cluster: Cluster, tenant_ids: list[str]) -> list[Replica]:
    """Every edge node's replica, then the central one."""
    edges = [await asyncio.to_thread(read_edge, node, tenant_ids) for node in cluster.nodes]
    return [*edges, await read_central(cluster.dsn, tenant_ids)]


def not_converged(replicas: list[Replica], cluster: Cluster) -> list[str]:
    """Why the cluster has not settled yet; empty when every queue and outbox is drained and
    every replica holds the same ratings and keys."""
    reasons = [f"{n.node_id} is down" for n in cluster.nodes if not n.up]
    *edges, central = replicas
    for edge in edges:
        for what, count in (
            ("rating outbox entries", edge.outbox),
            ("registry outbox entries", edge.registry_outbox),
            ("usage events on the queue", edge.queue_depth),
            ("billing batches planned or sent", edge.open_batches),
        ):
            if count:
                reasons.append(f"{edge.name}: {count} {what}")
        for tenant_id, rows in central.rows.items():
            if edge.rows.get(tenant_id) != rows:
                reasons.append(f"{edge.name}: ratings of {tenant_id} differ from central")
        if edge.keys != central.keys:
            reasons.append(f"{edge.name}: API keys differ from central")
    return reasons
