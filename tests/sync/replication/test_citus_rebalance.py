"""Shards moving between Citus workers while edges sync: no row skipped, none duplicated.

A moved shard keeps the change positions its rows had on the old worker; on the new worker
they are another server's transaction ids. The workers' ids are set far apart first, so that
a download resuming a moved shard from its old position (in the old worker's ids) would pass
over the rows written on the new worker: the edges must scan a moved shard again.

Shards move both ways Citus offers: `block_writes` (writes to a moving shard wait for its
copy) and by logical replication (`force_logical`, and `auto`, the rebalancer's default, which
picks it for tables with a primary key), where the shard takes writes while it is copied and
the changes written meanwhile are replicated to the new worker. Each move must end within
MOVE_BOUND: a logical move that cannot apply those changes waits for them for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sync.backoff import Backoff
from sync.central.schema import migrate_dsns
from sync.postgres import Connection, connect
from tests.citus import CitusCluster
from tests.postgres import PostgresServer
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge, central_rows, rows_hash

TENANTS = 6
BURNED_IDS = 3000  # how far ahead the first worker's transaction ids are set
MOVE_BOUND = 120.0  # seconds; a stalled move never ends, a working one takes a few
# How each test moves shards: (citus_move_shard_placement's mode, the rebalancer's mode).
TRANSFER_MODES = {
    "block_writes": ("block_writes", "block_writes"),
    "logical": ("force_logical", None),  # None: the rebalancer's default, 'auto'
}


@pytest.fixture
async def coordinator(citus_dsn: str) -> AsyncIterator[Connection]:
    await migrate_dsns([citus_dsn])
    conn = await connect(citus_dsn)
    yield conn
    await conn.close()


async def burn_ids(worker: PostgresServer, database: str, count: int) -> None:
    """Take `count` transaction ids on `worker`, each in a transaction of its own."""
    conn = await connect(worker.dsn(database))
    try:
        for _ in range(count):
            await conn.fetchval("SELECT pg_current_xact_id()")
    finally:
        await conn.close()


async def bounded(conn: Connection, query: str, *args: object) -> None:
    """Run `query`, failing the test if it has not ended within MOVE_BOUND."""
    try:
        await asyncio.wait_for(conn.execute(query, *args), MOVE_BOUND)
    except TimeoutError:
        pytest.fail(f"not done after {MOVE_BOUND:.0f} s: {query}")


async def move_all(
    conn: Connection, source: PostgresServer, target: PostgresServer, mode: str
) -> int:
    """Move every shard group placed on `source` to `target`, online; how many moved."""
    shards = await conn.fetch(
        "SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)"
        " JOIN pg_dist_node n USING (groupid)"
        " WHERE s.logicalrelid = 'tenants'::regclass AND n.nodeport = $1",
        source.port,
    )
    for (shard,) in shards:
        await bounded(
            conn,
            "SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3,"
            " shard_transfer_mode => $4::citus.shard_transfer_mode)",
            shard,
            source.port,
            target.port,
            mode,
        )
    return len(shards)


async def write_while(edge: Edge, tenants: list[str], stop: asyncio.Event) -> int:
    """Rate (and now and then rewrite) items of every tenant on `edge` until `stop`."""
    n = 0
    while not stop.is_set():
        for t in tenants:
            edge.rate(t, f"u{n % 40}", f"item{n % 7}", 1 + n % 5, f"#{n}")
        n += 1
        await asyncio.sleep(0.05)
    return n


async def converged(edges: list[Edge], conn: Connection, tenants: list[str]) -> bool:
    for t in tenants:
        central = await central_rows(conn, t)
        if any(rows_hash(e.rows(t)) != rows_hash(central) for e in edges):
            return False
    return True


@pytest.mark.parametrize("transfer", TRANSFER_MODES)
async def test_moving_and_rebalancing_shards_while_edges_sync_skips_and_duplicates_nothing(
    citus_cluster: CitusCluster, coordinator: Connection, make_edge: EdgeFactory, transfer: str
) -> None:
    """Edge A writes to six tenants while A and B sync every 50 ms; meanwhile every shard on
    the worker far ahead in transaction ids moves to the other worker, then
    citus_rebalance_start spreads them again, each move ending within MOVE_BOUND. Afterwards
    both edges hold exactly the central rows of every tenant (same hash, same count), and no
    rating is held twice."""
    move_mode, rebalance_mode = TRANSFER_MODES[transfer]
    database = await coordinator.fetchval("SELECT current_database()")
    ahead, behind = citus_cluster.workers
    await burn_ids(ahead, database, BURNED_IDS)
    a, b = make_edge("edge-a"), make_edge("edge-b")
    tenants = [a.registry.create_tenant(f"t{i}")[0].tenant_id for i in range(TENANTS)]
    dsn = citus_cluster.dsn(database)
    workers = [e.worker([dsn], backoff=Backoff(0.05, 0.3)) for e in (a, b)]
    for worker in workers:
        worker.start()
    stop = asyncio.Event()
    writer = asyncio.create_task(write_while(a, tenants, stop))
    try:
        deadline = time.monotonic() + 30
        while not all(b.registry.get_tenant(t) for t in tenants):
            assert time.monotonic() < deadline, "the tenants never reached edge B"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert await move_all(coordinator, ahead, behind, move_mode) > 0
        await asyncio.sleep(0.5)
        if rebalance_mode is None:
            await coordinator.execute("SELECT citus_rebalance_start()")
        else:
            await coordinator.execute(
                "SELECT citus_rebalance_start(shard_transfer_mode =>"
                " $1::citus.shard_transfer_mode)",
                rebalance_mode,
            )
        await bounded(coordinator, "SELECT citus_rebalance_wait()")
        on_ahead = await coordinator.fetchval(
            "SELECT count(*) FROM pg_dist_placement JOIN pg_dist_node USING (groupid)"
            " WHERE nodeport = $1",
            ahead.port,
        )
        assert on_ahead > 0, "the rebalance moved nothing back"
        await asyncio.sleep(0.5)
        stop.set()
        written = await writer
        assert written > 0
        deadline = time.monotonic() + 30
        while not await converged([a, b], coordinator, tenants):
            assert time.monotonic() < deadline, "edge B never held the central rows"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(writer, return_exceptions=True)
        for worker in workers:
            await worker.stop()
    for t in tenants:
        rows = b.rows(t)
        assert len({(r[2], r[3]) for r in rows}) == len(rows)  # one row per (user, item)
        assert len(rows) == await coordinator.fetchval(
            "SELECT count(*) FROM ratings WHERE tenant_id = $1", t
        )
