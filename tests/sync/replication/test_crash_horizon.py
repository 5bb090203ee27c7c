"""A central crash hands out transaction ids again; no edge's checkpoint may be past them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.central.schema import migrate_dsns
from sync.postgres import connect
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
