"""Ratings sync through a real central PostgreSQL: upload, download, the conflict rule,
tombstones, out-of-order commits, interrupted uploads and rows the server refuses."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from edge_node.errors import TransientSyncError
from edge_node.rating.replication import RatingRow, rating_id
from sync.central.schema import migrate_dsns
from sync.postgres import Connection, connect
from sync.replication.downloads import Downloads
from sync.replication.positions import Position, database_identity
from sync.replication.ratings import download_ratings, upload_ratings
from sync.replication.round_values import EdgeStorage
from sync.replication.rounds import ShardRound
from sync.replication.set_aside import FILE_NAME as SET_ASIDE_FILE
from sync.replication.set_aside import SetAsideLog
from sync.replication.shard_state import set_shard_checkpoint, shard_checkpoint
from tests.postgres import PostgresServer
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge, central_rows, central_scores


def remote_row(
    tenant_id: str,
    user_id: str,
    item_id: str,
    score: int,
    *,
    updated_at: int,
    origin: str,
    deleted: bool = False,
) -> RatingRow:
    rid = rating_id(tenant_id, user_id, item_id)
    comment = None if deleted else f"{origin}@{updated_at}".encode()
    return RatingRow(
        rid, tenant_id, user_id, item_id, score, comment, 1, updated_at, origin, deleted
    )


async def shared_tenant(central: str, *edges: Edge) -> str:
    """A tenant created on the first edge and synced to the others through the central db."""
    tenant, _ = edges[0].registry.create_tenant("acme")
    for edge in edges:
        await edge.sync(central)
    return tenant.tenant_id


class TestUploadAndDownload:
    async def test_ratings_written_on_one_edge_reach_another(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Ratings, updates and a delete made on edge A are uploaded, A's outbox empties, and
        edge B downloads the same rows and the same score aggregates as A and the central db."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        t = await shared_tenant(central, a, b)
        a.rate(t, "u1", "book", 5, "great")
        a.rate(t, "u2", "book", 3)
        a.rate(t, "u2", "book", 4, "changed my mind")
        gone = a.rate(t, "u3", "pen", 2)
        assert a.store(t).delete(gone)

        [report] = await a.sync(central)
        assert report.uploaded == 3
        assert a.pending(t) == []
        await b.sync(central)

        assert len(b.rows(t)) == 3
        assert b.rows(t) == a.rows(t) == await central_rows(db, t)
        assert b.scores(t) == a.scores(t) == await central_scores(db, t)
        assert b.scores(t) == [("book", 2, 9, 0, 0, 0, 1, 1)]

    async def test_own_rows_come_back_and_change_nothing(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """Rows an edge uploaded come back in its download, and applying them is a no-op."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        for user in ("u1", "u2", "u3"):
            a.rate(t, user, "book", 4)
        before = a.rows(t)
        [report] = await a.sync(central)
        assert (report.uploaded, report.downloaded, report.applied) == (3, 3, 0)
        assert a.rows(t) == before
        assert a.pending(t) == []

    async def test_a_later_write_on_another_edge_wins_everywhere(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Two edges rate the same (user, item); after both sync, the later write is the row on
        both edges and in the central database."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        t = await shared_tenant(central, a, b)
        a.rate(t, "u1", "book", 1, "first")
        await asyncio.sleep(0.002)
        b.rate(t, "u1", "book", 5, "second")
        await b.sync(central)
        await a.sync(central)  # A's older write is uploaded, loses, and B's comes down
        await b.sync(central)
        [row] = await central_rows(db, t)
        assert row[4] == 5
        assert a.rows(t) == b.rows(t) == [row]  # the same sealed bytes on every replica
        assert a.comments(t) == b.comments(t) == {("u1", "book"): "second"}

    async def test_tombstones_propagate_and_scores_follow(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A delete on one edge tombstones the row on the other edge and centrally, and every
        replica's scores drop it."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        t = await shared_tenant(central, a, b)
        kept = a.rate(t, "u1", "book", 3)
        gone = a.rate(t, "u2", "book", 5, "to be erased")
        await a.sync(central)
        await b.sync(central)
        assert b.scores(t) == [("book", 2, 8, 0, 0, 1, 0, 1)]

        assert b.store(t).delete(gone)
        await b.sync(central)
        await a.sync(central)
        tombstone = next(r for r in a.rows(t) if r[0] == gone)
        assert tombstone[5] is None
        assert tombstone[9] is True
        assert a.rows(t) == b.rows(t) == await central_rows(db, t)
        assert a.scores(t) == b.scores(t) == await central_scores(db, t)
        assert a.scores(t) == [("book", 1, 3, 0, 0, 1, 0, 0)]
        assert [r[0] for r in a.rows(t) if not r[9]] == [kept]


class TestConflictRule:
    @pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
    async def test_central_keeps_the_winner_whatever_the_arrival_order(
        self, db: Connection, order: tuple[int, ...]
    ) -> None:
        """Three versions of one rating uploaded one by one in any order leave the central row
        at the latest updated_at, the tie at that time broken by the greater origin node."""
        t = str(uuid.uuid4())
        versions = [
            remote_row(t, "u1", "book", 1, updated_at=100, origin="node-z"),
            remote_row(t, "u1", "book", 2, updated_at=200, origin="node-B"),
            remote_row(t, "u1", "book", 3, updated_at=200, origin="node-a"),
        ]
        for i in order:
            await upload_ratings(db, [versions[i]])
        [row] = await central_rows(db, t)
        assert row[4] == 3
        assert row[8] == "node-a"

    async def test_a_batch_holding_several_versions_keeps_the_winner(self, db: Connection) -> None:
        """Versions of one rating inside one batch are reduced to the winner before upload."""
        t = str(uuid.uuid4())
        batch = [
            remote_row(t, "u1", "book", 3, updated_at=200, origin="node-a"),
            remote_row(t, "u1", "book", 1, updated_at=100, origin="node-z"),
            remote_row(t, "u1", "book", 2, updated_at=200, origin="node-B"),
        ]
        assert await upload_ratings(db, batch) == 1
        [row] = await central_rows(db, t)
        assert row[4] == 3

    async def test_a_losing_or_repeated_upload_changes_nothing(self, db: Connection) -> None:
        """An upload that does not win, or repeats the stored version, leaves the row and its
        change position alone: nothing for any edge to download again."""
        t = str(uuid.uuid4())
        winner = remote_row(t, "u1", "book", 4, updated_at=500, origin="node-a")
        assert await upload_ratings(db, [winner]) == 1
        position = await db.fetchval("SELECT change_xid::text FROM ratings")
        assert await upload_ratings(db, [winner]) == 0
        older = remote_row(t, "u1", "book", 1, updated_at=499, origin="node-z")
        assert await upload_ratings(db, [older]) == 0
        assert await db.fetchval("SELECT change_xid::text FROM ratings") == position

    @pytest.fixture
    async def icu_db(self, postgres_server: PostgresServer) -> AsyncIterator[Connection]:
        """A central database whose default collation is ICU en-US, where 'node-B' sorts after
        'node-a' (byte order puts it before)."""
        name = f"icu_{uuid.uuid4().hex[:12]}"
        postgres_server.sql(
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu"
            " ICU_LOCALE 'en-US' LOCALE 'C'"
        )
        dsn = postgres_server.dsn(name)
        await migrate_dsns([dsn])
        conn = await connect(dsn)
        yield conn
        await conn.close()
        postgres_server.drop_database(name)

    async def test_origin_ties_break_by_bytes_whatever_the_collation(
        self, icu_db: Connection
    ) -> None:
        """On a database whose collation orders text differently, the tie on updated_at is
        still broken as every edge breaks it: by the origin node's bytes."""
        t = str(uuid.uuid4())
        upper = remote_row(t, "u1", "book", 1, updated_at=200, origin="node-B")
        lower = remote_row(t, "u1", "book", 5, updated_at=200, origin="node-a")
        assert lower.origin_node > upper.origin_node  # Python, like SQLite, compares code points
        for first, second in ((upper, lower), (lower, upper)):
            await icu_db.execute("TRUNCATE ratings")
            await upload_ratings(icu_db, [first])
            await upload_ratings(icu_db, [second])
            assert await icu_db.fetchval("SELECT origin_node FROM ratings") == "node-a"

    async def test_a_download_never_overwrites_a_newer_pending_local_write(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A downloaded row older than a local write still waiting in the outbox loses to it;
        the local write stays and is uploaded afterwards; a newer downloaded row replaces it."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        local = a.rate(t, "u1", "book", 5, "mine")
        current = a.rows(t)[0]
        older = remote_row(t, "u1", "book", 1, updated_at=int(current[7]) - 1, origin="node-z")
        await upload_ratings(db, [older])

        round_ = ShardRound(
            db, 0, 1, EdgeStorage(a.node_database, a.stores), 100, SetAsideLog(a.data_dir / "x")
        )
        database = await round_.database()
        await round_.ratings(await round_.open_downloads(database)).download([t], database)
        assert a.rows(t) == [current]
        assert [r.id for r in a.pending(t)] == [local]

        newer = remote_row(t, "u1", "book", 2, updated_at=int(current[7]) + 1, origin="node-z")
        await upload_ratings(db, [newer])
        await a.sync(central)
        assert a.rows(t) == await central_rows(db, t)
        assert a.rows(t)[0][4] == 2
        assert a.scores(t) == [("book", 1, 2, 0, 1, 0, 0, 0)]


async def checkpoint_xid(edge: Edge, conn: Connection, tenant_id: str) -> int:
    """How far the shard checkpoint stands in the xid space of the server holding the tenant's
    rows: the database's own, or on Citus that of the worker holding the tenant's shard."""
    downloads = await Downloads.open(conn, "test", await database_identity(conn))
    position = downloads.decode(shard_checkpoint(edge.node_database, 0))
    if isinstance(position, Position):
        return position.xid
    shard = await conn.fetchval(
        "SELECT get_shard_id_for_distribution_column('ratings', $1::uuid)", tenant_id
    )
    return position.parts[shard].xid


class TestOutOfOrderCommits:
    async def test_the_download_never_skips_a_row_committed_out_of_order(
        self, make_edge: EdgeFactory, any_central: str
    ) -> None:
        """Writer A starts first and commits last, writer B commits in between: an edge syncing
        in between, one row per page, reads neither row and does not move its checkpoint past
        A's transaction (a full page must not carry it past A either), and gets A's row (and
        B's) once A commits."""
        edge = make_edge("edge-b")
        t = await shared_tenant(any_central, edge)
        await edge.sync(any_central)  # on Citus: every shard past its first read, a key scan
        early, late = await connect(any_central), await connect(any_central)
        try:
            early_tx = early.transaction()
            await early_tx.start()
            await upload_ratings(
                early, [remote_row(t, "u-early", "i", 2, updated_at=10, origin="w1")]
            )
            early_xid = int(  # on Citus, the id on the worker that holds the tenant
                await early.fetchval("SELECT change_xid::text FROM ratings WHERE tenant_id = $1", t)
            )
            await upload_ratings(
                late, [remote_row(t, "u-late", "i", 4, updated_at=20, origin="w2")]
            )

            await edge.sync(any_central, batch_size=1)
            assert await checkpoint_xid(edge, late, t) <= early_xid
            assert edge.rows(t) == []  # B's row is committed, but at or above the horizon

            await early_tx.commit()
            await edge.sync(any_central, batch_size=1)
            assert sorted(r[2] for r in edge.rows(t)) == ["u-early", "u-late"]
        finally:
            await early.close()
            await late.close()

    async def test_a_tenant_read_in_small_pages_is_read_whole(
        self, make_edge: EdgeFactory, any_central: str
    ) -> None:
        """With pages smaller than the backlog, and rows sharing one transaction, every row
        arrives once: pages resume after the last (position, id) read."""
        edge = make_edge("edge-b")
        t = await shared_tenant(any_central, edge)
        rows = [
            remote_row(t, f"u{i:02d}", "i", 1 + i % 5, updated_at=i + 1, origin="w")
            for i in range(23)
        ]
        db = await connect(any_central)
        try:
            await upload_ratings(db, rows[:10])
            await upload_ratings(db, rows[10:])
            [report] = await edge.sync(any_central, batch_size=4)
            assert report.downloaded == 23
            assert edge.rows(t) == await central_rows(db, t)
        finally:
            await db.close()

    async def test_a_checkpoint_from_another_database_starts_over(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A checkpoint naming another central database is not trusted: the shard and the
        tenant are read again from the beginning (a tenant moved to another shard misses
        nothing)."""
        edge = make_edge("edge-b")
        t = await shared_tenant(central, edge)
        await upload_ratings(db, [remote_row(t, "u1", "i", 3, updated_at=5, origin="w")])
        foreign = Position("123/456", 2**40).encode()
        edge.store(t).set_download_checkpoint(foreign, [])
        set_shard_checkpoint(edge.node_database, 0, foreign)
        await edge.sync(central)
        assert [r[2] for r in edge.rows(t)] == ["u1"]
        downloads = await Downloads.open(db, "test", await database_identity(db))
        rows, _, _ = await download_ratings(downloads, t, downloads.decode(foreign), 10)
        assert len(rows) == 1


class TestInterruptedUpload:
    async def test_a_batch_killed_mid_upload_is_neither_lost_nor_applied_twice(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """The server backend of an upload is terminated while its second batch waits on a row
        lock: the first batch stays committed and acknowledged, the second is rolled back and
        stays queued, and the next round uploads the rest; every row lands exactly once."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        for i in range(2500):
            a.rate(t, f"u{i:04d}", "book", 1 + i % 5)
        blocker = await connect(central)
        try:
            hold = blocker.transaction()
            await hold.start()  # an uncommitted version of a row of the second batch
            await upload_ratings(
                blocker, [remote_row(t, "u1500", "book", 1, updated_at=1, origin="x")]
            )
            upload = asyncio.create_task(a.sync(central, batch_size=1000))
            pid = await waiting_backend(db)
            await db.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(TransientSyncError):
                await upload
            await hold.rollback()
        finally:
            await blocker.close()

        assert await db.fetchval("SELECT count(*) FROM ratings") == 1000
        assert len(a.pending(t)) == 1500
        first_batch = await db.fetchval("SELECT count(DISTINCT change_xid) FROM ratings")
        assert first_batch == 1

        [report] = await a.sync(central, batch_size=1000)
        assert report.uploaded == 1500
        assert a.pending(t) == []
        assert a.rows(t) == await central_rows(db, t)
        positions = await db.fetch(
            "SELECT change_xid::text AS x, count(*) AS n FROM ratings GROUP BY 1 ORDER BY 1"
        )
        assert [p["n"] for p in positions] == [1000, 1000, 500]  # one transaction per batch

    async def test_a_rating_rewritten_while_its_batch_is_in_flight_is_not_acknowledged_with_it(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A local write landing while the batch holding the rating's previous version waits
        on the server is not acknowledged with that batch: the round uploads it after that
        batch, and the central row is the newer version."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        a.rate(t, "u1", "book", 1, "first")
        blocker = await connect(central)
        try:
            hold = blocker.transaction()
            await hold.start()  # an uncommitted version of the same rating: the upload waits
            await upload_ratings(
                blocker, [remote_row(t, "u1", "book", 5, updated_at=1, origin="x")]
            )
            upload = asyncio.create_task(a.sync(central))
            await waiting_backend(db)
            a.rate(t, "u1", "book", 2, "second")
            await hold.rollback()
            await upload
        finally:
            await blocker.close()

        assert a.pending(t) == []
        assert a.rows(t) == await central_rows(db, t)
        assert a.comments(t) == {("u1", "book"): "second"}

    async def test_a_batch_committed_but_not_acknowledged_is_sent_again_harmlessly(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """When the COMMIT went through but the edge never acknowledged its outbox (a crash,
        a reply lost), the next round sends the batch again and nothing changes centrally."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        for i in range(20):
            a.rate(t, f"u{i}", "book", 3)
        assert await upload_ratings(db, a.pending(t)) == 20  # committed, never acknowledged
        before = await db.fetch("SELECT id, change_xid::text FROM ratings ORDER BY id")
        [report] = await a.sync(central)
        assert report.uploaded == 20
        assert report.applied == 0
        assert a.pending(t) == []
        assert await db.fetch("SELECT id, change_xid::text FROM ratings ORDER BY id") == before


class TestRefusedRows:
    async def test_a_row_the_server_refuses_is_set_aside_and_the_rest_uploaded(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A batch holding one row that violates a central constraint: the other rows are
        uploaded, the refused one is written to the set-aside file with the error, and the
        outbox is not wedged."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        await db.execute("ALTER TABLE ratings ADD CONSTRAINT no_evil CHECK (item_id <> 'evil')")
        for i in range(6):
            a.rate(t, f"u{i}", "evil" if i == 4 else "book", 5)
        [report] = await a.sync(central)
        assert report.set_aside == 1
        assert a.pending(t) == []
        assert await db.fetchval("SELECT count(*) FROM ratings") == 5
        [line] = (a.data_dir / SET_ASIDE_FILE).read_bytes().splitlines()
        record = orjson.loads(line)
        assert record["kind"] == "rating"
        assert record["row"]["item_id"] == "evil"
        assert "no_evil" in record["error"]


async def waiting_backend(db: Connection) -> int:
    """The pid of the edge's upload once it waits on a row lock."""
    for _ in range(500):
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO ratings%'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("the upload never waited on the row lock")
