"""Downloads read from a hot standby (central.standby_dsns) while the primary takes writes:
uploads go to the primary, no row is skipped, and the standby's lag is reported."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_node.errors import ConfigError
from sync.backoff import Backoff
from sync.postgres import Connection, connect
from sync.replication.ratings import upload_ratings
from sync.status import read_status_file
from tests.postgres import PostgresServer
from tests.sync.conftest import EdgeFactory
from tests.sync.replication.test_ratings import remote_row
from tests.sync.support import Edge, central_rows, rows_hash


async def replayed(standby: PostgresServer, database: str) -> str:
    """The standby's DSN for `database`, once it has replayed the database's schema."""
    dsn = standby.dsn(database)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = await connect(dsn)
            try:
                if await conn.fetchval("SELECT to_regclass('ratings') IS NOT NULL"):
                    return dsn
            finally:
                await conn.close()
        except Exception:  # the database is not there yet
            pass
        assert time.monotonic() < deadline, "the standby never replayed the schema"
        await asyncio.sleep(0.1)


async def write_while(edge: Edge, tenant_id: str, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        edge.rate(tenant_id, f"u{n % 50}", f"item{n % 3}", 1 + n % 5)
        n += 1
        await asyncio.sleep(0.01)


async def test_a_standby_serves_downloads_while_the_primary_takes_writes(
    make_edge: EdgeFactory, central: str, db: Connection, postgres_standby: PostgresServer
) -> None:
    """Edge A writes and uploads to the primary; edge B uploads there too but reads every
    download from the standby, while a central transaction opened first commits last. B ends
    with exactly the primary's rows, the late-committed one included, and its status (and
    sync-status.json) reports the standby's lag."""
    standby_dsn = await replayed(postgres_standby, central.rsplit("/", 1)[1])
    a, b = make_edge("edge-a"), make_edge("edge-b")
    tenant, _ = a.registry.create_tenant("acme")
    t = tenant.tenant_id
    workers = [
        a.worker([central], backoff=Backoff(0.05, 0.3)),
        b.worker([central], standby_dsns=[standby_dsn], backoff=Backoff(0.05, 0.3)),
    ]
    for worker in workers:
        worker.start()
    stop = asyncio.Event()
    writer = asyncio.create_task(write_while(a, t, stop))
    late = await connect(central)
    try:
        transaction = late.transaction()
        await transaction.start()
        await upload_ratings(late, [remote_row(t, "late", "item0", 5, updated_at=1, origin="w")])
        await asyncio.sleep(1.0)
        await transaction.commit()
        await asyncio.sleep(0.5)
        stop.set()
        await writer
        deadline = time.monotonic() + 30
        while rows_hash(b.rows(t)) != rows_hash(await central_rows(db, t)):
            assert time.monotonic() < deadline, "edge B never held the primary's rows"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(writer, return_exceptions=True)
        await late.close()
        for worker in workers:
            await worker.stop()
    assert "late" in {r[2] for r in b.rows(t)}
    [status] = workers[1].status()
    assert status.standby_lag_seconds is not None
    assert status.standby_lag_seconds >= 0
    assert workers[0].status()[0].standby_lag_seconds is None
    document = read_status_file(b.data_dir)
    assert document is not None
    assert document["shards"][0]["standby_lag_seconds"] == status.standby_lag_seconds


def test_one_standby_per_shard_is_required(make_edge: EdgeFactory) -> None:
    """central.standby_dsns names one standby per shard ('' for none), or none at all."""
    edge = make_edge("edge-a")
    with pytest.raises(ConfigError, match="one standby per shard"):
        edge.worker(
            ["postgresql://a@db1/x", "postgresql://a@db2/x"], standby_dsns=["postgresql://a@s/x"]
        )
    edge.worker(
        ["postgresql://a@db1/x", "postgresql://a@db2/x"], standby_dsns=["", "postgresql://a@s/x"]
    )
