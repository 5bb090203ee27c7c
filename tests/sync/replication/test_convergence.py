"""Convergence: three edge nodes cut off from PostgreSQL by a fault-injecting proxy write
conflicting ratings and deletes; once the cut heals, every replica holds the same rows and
the same scores."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator

import pytest

from sync.backoff import Backoff
from sync.postgres import Connection, connect
from tests.postgres import free_port
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge, TcpProxy, central_rows, central_scores, rows_hash
from tests.sync.test_worker import wait_until

USERS = [f"u{i}" for i in range(12)]
ITEMS = ["book", "pen", "lamp"]


def write_conflicts(edge: Edge, tenant_id: str, seed: int) -> None:
    """Every (user, item) rated with an edge-specific score; some of them deleted again."""
    for n, (user, item) in enumerate((u, i) for u in USERS for i in ITEMS):
        rating = edge.rate(tenant_id, user, item, 1 + (n + seed) % 5, f"{edge.node_id} #{n}")
        if (n + seed) % 4 == 0:
            edge.store(tenant_id).delete(rating)


@pytest.fixture
async def db(any_central: str) -> AsyncIterator[Connection]:
    conn = await connect(any_central)
    yield conn
    await conn.close()


async def test_three_partitioned_edges_converge_after_the_cut_heals(
    make_edge: EdgeFactory, any_central: str, db: Connection
) -> None:
    """Edges A, B and C sync through a proxy that is cut while their connections are open;
    cut off, each writes conflicting versions of the same ratings and deletes some; after the
    proxy heals, their workers converge by themselves: identical row hashes and scores on all
    three edges and in PostgreSQL, and every write of the last writer is the one kept. On plain
    PostgreSQL and on the Citus cluster (through its coordinator)."""
    central = any_central
    edges = [make_edge(name) for name in ("edge-a", "edge-b", "edge-c")]
    tenant, _ = edges[0].registry.create_tenant("acme")
    t = tenant.tenant_id
    proxy = TcpProxy(urllib.parse.urlsplit(central).port or 0, free_port())
    await proxy.heal()
    workers = [e.worker([proxy.dsn(central)], backoff=Backoff(0.05, 0.3)) for e in edges]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 15
        while not all(e.registry.get_tenant(t) for e in edges):
            assert time.monotonic() < deadline, "the tenant never reached every edge"
            await asyncio.sleep(0.02)

        await proxy.cut()
        for seed, edge in enumerate(edges):
            write_conflicts(edge, t, seed)
            await asyncio.sleep(0.001)
        for worker in workers:
            await wait_until(worker, lambda s: s[0].consecutive_failures >= 1)
        assert await db.fetchval("SELECT count(*) FROM ratings") == 0

        await proxy.heal()
        expected = edges[-1].rows(t)  # C wrote last: every row is C's version
        deadline = time.monotonic() + 20
        while True:
            hashes = {rows_hash(e.rows(t)) for e in edges}
            hashes.add(rows_hash(await central_rows(db, t)))
            if len(hashes) == 1:
                break
            assert time.monotonic() < deadline, "the replicas never converged"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            await worker.stop()
        await proxy.cut()

    assert sorted(edges[0].rows(t)) == sorted(expected)
    assert {r[8] for r in expected} == {"edge-c"}
    scores = await central_scores(db, t)
    assert all(e.scores(t) == scores for e in edges)
    for e in edges:
        assert e.pending(t) == []
