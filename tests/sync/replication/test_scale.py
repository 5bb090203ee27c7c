"""Sync rounds at scale: only tenants with pending uploads or downloaded changes are opened,
rows are applied a chunk per loop turn, tenants the shard checkpoint passed catch up on their
own, and one tenant's failure leaves the others' round intact; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

from sync.backoff import Backoff
from sync.postgres import Connection, connect
from sync.replication.ratings import upload_ratings
from tests.sync.conftest import EdgeFactory
from tests.sync.replication.test_ratings import remote_row, shared_tenant
from tests.sync.support import Edge, central_rows


async def _tenants(central: str, count: int, *edges: Edge) -> list[str]:
    ids = [edges[0].registry.create_tenant(f"t{i}")[0].tenant_id for i in range(count)]
    for edge in edges:
        await edge.sync(central)
    return ids


class TestOnlyBusyTenantsAreOpened:
    async def test_a_round_opens_only_tenants_with_something_to_move(
        self, make_edge: EdgeFactory, central: str, tmp_path: Path
    ) -> None:
        """With every tenant file closed, an idle round opens none; a round after one tenant
        wrote locally and another changed centrally opens just those two."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        ids = await _tenants(central, 6, a, b)
        for t in ids:
            a.rate(t, "u1", "book", 3)
        await a.sync(central)
        await b.sync(central)
        b.close()
        b = make_edge("edge-b")  # the same data directory, no tenant file open
        await b.sync(central)
        assert b.stores.open_tenant_ids() == []
        a.rate(ids[1], "u2", "book", 4)
        await a.sync(central)
        b.rate(ids[4], "u3", "film", 5)
        [report] = await b.sync(central)
        assert sorted(b.stores.open_tenant_ids()) == sorted([ids[1], ids[4]])
        assert report.uploaded == 1
        assert b.rows(ids[1]) == a.rows(ids[1])

    async def test_rows_are_applied_a_chunk_per_loop_turn(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """While a page of a thousand rows is applied, another task runs in between chunks and
        sees the tenant's rows arrive part by part, never all in one loop turn."""
        b = make_edge("edge-b")
        t = await shared_tenant(central, b)
        rows = [
            remote_row(t, f"u{i}", "i", 1 + i % 5, updated_at=i + 1, origin="w")
            for i in range(1000)
        ]
        await upload_ratings(db, rows)
        seen: set[int] = set()
        path = b.stores.path(t)
        b.store(t)  # its file exists, as once a request used the tenant

        async def watch() -> None:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                while True:
                    seen.add(conn.execute("SELECT count(*) FROM ratings").fetchone()[0])
                    await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await b.sync(central)
        finally:
            watcher.cancel()
        partial = {n for n in seen if 0 < n < 1000}
        assert len(partial) >= 2
        assert b.rows(t) == await central_rows(db, t)


class TestCatchUp:
    async def test_a_tenant_learned_after_the_shard_passed_its_rows_gets_them_all(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Ratings of a tenant not yet in the central registry pass the edge's shard
        checkpoint unapplied; once the tenant arrives, the edge catches it up on its own and
        joins it to the shard download, which then brings its later rows."""
        b = make_edge("edge-b")
        await _tenants(central, 1, b)
        t = str(uuid.uuid4())
        await upload_ratings(
            db, [remote_row(t, f"u{i}", "i", 2, updated_at=i + 1, origin="w") for i in range(5)]
        )
        await b.sync(central)  # the shard checkpoint passes t's rows: t is unknown here
        await db.execute(
            "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
            " VALUES ($1, 'late', 'payg', 1, 1)",
            t,
        )
        await b.sync(central)
        assert b.rows(t) == await central_rows(db, t)
        await upload_ratings(db, [remote_row(t, "u9", "i", 5, updated_at=99, origin="w")])
        [report] = await b.sync(central)
        assert report.downloaded == 1
        assert b.rows(t) == await central_rows(db, t)


class TestTenantIsolation:
    async def test_rows_locked_centrally_hold_back_only_their_tenant(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """One tenant's central rows are locked by another session: its upload gives up after
        the lock timeout, the other tenant's upload goes through in the same round, and the
        locked one is counted, skipped until its backoff has passed, then uploaded."""
        a = make_edge("edge-a")
        locked, free = await _tenants(central, 2, a)
        for t in (locked, free):
            a.rate(t, "u1", "book", 3)
        await a.sync(central)
        holder = await connect(central)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM ratings WHERE tenant_id = $1 FOR UPDATE", locked)
            a.rate(locked, "u1", "book", 1)
            a.rate(free, "u1", "book", 5)
            worker = a.worker(
                [central], lock_timeout=0.2, backoff=Backoff(initial=4.0, maximum=4.0)
            )
            [report] = await worker.run_once()
            assert report.uploaded == 1
            assert (await central_rows(db, free))[0][4] == 5
            assert len(a.pending(locked)) == 1
            [status] = worker.status()
            assert (status.failing_tenants, status.tenant_failures) == (1, 1)
            assert locked in str(status.last_tenant_error)
            assert "lock" in str(status.last_tenant_error)
            await transaction.rollback()
            await worker.run_once()  # within the backoff: not tried again yet
            assert len(a.pending(locked)) == 1
            assert worker.status()[0].tenant_failures == 1
            await asyncio.sleep(4.1)
            await worker.run_once()
            await worker.stop(grace=0)
            assert a.pending(locked) == []
            assert (await central_rows(db, locked))[0][4] == 1
            assert worker.status()[0].failing_tenants == 0
        finally:
            await holder.close()

    async def test_a_tenant_file_that_cannot_be_written_holds_back_only_itself(
        self, make_edge: EdgeFactory, central: str, db: Connection, tmp_path: Path
    ) -> None:
        """A tenant file locked by another process fails its download: the other tenant's
        rows still arrive in that round; once the file is free the failed tenant catches up
        on everything the shard checkpoint passed meanwhile."""
        a = make_edge("edge-a")
        b = Edge.open(tmp_path / "edge-b", "edge-b", busy_timeout_ms=50)
        try:
            stuck, fine = await _tenants(central, 2, a, b)
            for t in (stuck, fine):
                a.rate(t, "u1", "book", 2)
            await a.sync(central)
            b.stores.get(stuck)
            blocker = sqlite3.connect(b.stores.path(stuck), isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            worker = b.worker([central], backoff=Backoff(initial=0.01, maximum=0.01))
            await worker.run_once()
            assert b.rows(fine) == await central_rows(db, fine)
            [status] = worker.status()
            assert status.tenant_failures >= 1
            assert stuck in str(status.last_tenant_error)
            blocker.rollback()
            blocker.close()
            await asyncio.sleep(0.05)
            await worker.run_once()
            await worker.stop(grace=0)
            assert b.rows(stuck) == await central_rows(db, stuck)
            assert worker.status()[0].failing_tenants == 0
        finally:
            b.close()
