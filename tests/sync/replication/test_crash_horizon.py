"""A central crash hands out transaction ids again; no edge's checkpoint may be past them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.errors import TransientSyncError
from sync.central.schema import migrate_dsns
from sync.postgres import connect
from tests.citus import CitusCluster
from tests.postgres import PostgresServer, _start, start_server
from tests.sync.support import Edge


@pytest.fixture
def crashable() -> Iterator[PostgresServer]:
    """A private server this test may crash; its WAL writer flushes rarely, so the ids of
    transactions that wrote no flushed WAL are lost in a crash and handed out again."""
    server = start_server()
    try:
        server.sql("ALTER SYSTEM SET synchronous_commit = on")
        server.sql("ALTER SYSTEM SET wal_writer_delay = '10s'")
        server.sql("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()


def crash_and_restart(server: PostgresServer) -> None:
    server._run(server.bin_dir / "pg_ctl", "stop", "-D", str(server.data_dir), "-m", "immediate")
    _start(server)


async def test_a_row_written_under_a_reissued_id_still_reaches_every_edge(
    crashable: PostgresServer, tmp_path: Path
) -> None:
    """After a crash that hands out an id a download horizon had passed, a rating written
    under it is still downloaded by the edge that synced before the crash."""
    dsn = crashable.dsn("postgres")
    await migrate_dsns([dsn])
    a, b = Edge.open(tmp_path / "a", "edge-a"), Edge.open(tmp_path / "b", "edge-b")
    try:
        tenant, _ = a.registry.create_tenant("acme")
        t = tenant.tenant_id
        a.rate(t, "u1", "book", 3)
        await a.sync(dsn)
        await b.sync(dsn)
        conn = await connect(dsn)
        await conn.execute("CHECKPOINT")
        a.rate(t, "u2", "lamp", 4)
        await a.sync(dsn)  # its commit is flushed: every id up to it is durable
        # Then a transaction that takes an id and writes no flushed WAL: an insert the
        # change-position trigger stamped and a CHECK then refused.
        with pytest.raises(Exception, match="check"):
            await conn.execute(
                "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
                " updated_at, origin_node) VALUES (gen_random_uuid(), gen_random_uuid(),"
                " 'x', 'y', 9, 1, 1, 'n')"
            )
        await conn.close()
        await b.sync(dsn)  # downloads u2: b's stored horizon would pass the refused insert's id

        await asyncio.to_thread(crash_and_restart, crashable)
        dsn = crashable.dsn("postgres")
        a.rate(t, "u3", "pen", 5)
        await a.sync(dsn)
        for _ in range(3):
            await b.sync(dsn)
        assert sorted(row[2] for row in b.rows(t)) == ["u1", "u2", "u3"]
    finally:
        a.close()
        b.close()


async def test_on_citus_a_row_written_under_an_id_a_worker_reissues_reaches_every_edge(
    citus_cluster: CitusCluster, citus_dsn: str, tmp_path: Path
) -> None:
    """The same on the Citus cluster: the worker holding the tenant's shard crashes after a
    refused insert took an id there; the rating written next on that worker (under the id
    handed out again, were it not for that worker's own durable bound) reaches the edge that
    synced before the crash."""
    dsn = citus_dsn
    await migrate_dsns([dsn])
    a, b = Edge.open(tmp_path / "a", "edge-a"), Edge.open(tmp_path / "b", "edge-b")
    tenant, _ = a.registry.create_tenant("acme")
    t = tenant.tenant_id
    conn = await connect(dsn)
    port = await conn.fetchval(
        "SELECT nodeport FROM pg_dist_placement JOIN pg_dist_node USING (groupid)"
        " WHERE shardid = get_shard_id_for_distribution_column('ratings', $1::uuid)",
        t,
    )
    worker = next(w for w in citus_cluster.workers if w.port == port)
    database = dsn.rsplit("/", 1)[1]
    worker.sql("ALTER SYSTEM SET synchronous_commit = on")
    worker.sql("ALTER SYSTEM SET wal_writer_delay = '10s'")
    worker.sql("SELECT pg_reload_conf()")
    try:
        a.rate(t, "u1", "book", 3)
        await a.sync(dsn)
        await b.sync(dsn)
        worker.sql("CHECKPOINT", database=database)
        a.rate(t, "u2", "lamp", 4)
        await a.sync(dsn)
        # Several refused inserts, each an id the tenant's worker stamps and never flushes:
        # after the crash, the ids its own reconnections and Citus' take first leave the
        # next rating under one of them still.
        for _ in range(20):
            with pytest.raises(Exception, match="check"):
                await conn.execute(
                    "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
                    " updated_at, origin_node) VALUES ($1, gen_random_uuid(), 'x', 'y', 9, 1,"
                    " 1, 'n')",
                    t,
                )
        await conn.close()
        await b.sync(dsn)

        await asyncio.to_thread(crash_and_restart, worker)

        assert worker.port == port, "the worker came back on another port"
        a.rate(t, "u3", "pen", 5)
        await sync_through_reconnects(a, dsn)
        for _ in range(3):
            await sync_through_reconnects(b, dsn)
        assert sorted(row[2] for row in b.rows(t)) == ["u1", "u2", "u3"]
    finally:
        a.close()
        b.close()
        worker.sql("ALTER SYSTEM RESET synchronous_commit")
        worker.sql("ALTER SYSTEM RESET wal_writer_delay")
        worker.sql("SELECT pg_reload_conf()")


async def sync_through_reconnects(edge: Edge, dsn: str) -> None:
    """One round, again while the coordinator's cached connections to a restarted worker
    fail (each failure drops one of them)."""
    for _ in range(5):
        try:
            await edge.sync(dsn)
            return
        except TransientSyncError:
            await asyncio.sleep(0.2)
    await edge.sync(dsn)
