"""Key material through the central database: sealed comments readable across the fleet,
tenant deletions shredding every copy, central and local, and nothing resurrected after."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from edge_node.crypto.key_files import WrappingKey
from edge_node.crypto.keystore import KEY_STORE_FILE, KEYS_DIRECTORY
from edge_node.deletion import delete_tenant
from edge_node.rating.replication import RatingRow
from edge_node.rating.store import TenantStores
from sync.postgres import Connection
from sync.replication.ratings import upload_ratings
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge


async def shared_tenant(central: str, *edges: Edge) -> str:
    """A tenant created on the first edge and synced to the others through the central db."""
    tenant, _ = edges[0].registry.create_tenant("acme")
    for edge in edges:
        await edge.sync(central)
    return tenant.tenant_id


async def commented_on_a_read_on_b(
    make_edge: EdgeFactory, central: str, comment: str
) -> tuple[Edge, Edge, str]:
    """Edges A and B sharing a tenant, A's comment on it synced to B and read there."""
    a, b = make_edge("edge-a"), make_edge("edge-b")
    t = await shared_tenant(central, a, b)
    a.rate(t, "ana", "book", 5, comment)
    await a.sync(central)
    await b.sync(central)
    assert b.comments(t) == {("ana", "book"): comment}
    return a, b, t


async def central_count(db: Connection, table: str, tenant_id: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_id))


class TestSharedDataKeys:
    async def test_a_comment_sealed_on_one_edge_opens_on_another_and_never_centrally(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A's comment is uploaded as the very bytes A stores, with A's data key wrapped by the
        fleet key (not A's master key); B, with its own master key, downloads both and serves
        the text. The central database holds neither the text nor a usable key."""
        a, b, t = await commented_on_a_read_on_b(make_edge, central, "words only ana reads")
        [record] = await db.fetch("SELECT comment, comment_sealed FROM ratings")
        assert record["comment"] is None
        assert record["comment_sealed"] == a.rows(t)[0][5] == b.rows(t)[0][5]
        [key] = await db.fetch("SELECT wrapped, fleet_key_id FROM tenant_data_keys")
        assert key["fleet_key_id"] == a.stores.keyring.fleet_key.key_id  # type: ignore[union-attr]
        central_values = [
            value
            for table in ("ratings", "tenant_data_keys")
            for r in await db.fetch(f"SELECT * FROM {table}")
            for value in r.values()
        ]
        dump = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in central_values)
        assert b"words only ana reads" not in dump

    async def test_keys_created_on_two_edges_at_once_both_reach_every_edge(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """Two edges writing the same tenant's first comments before any sync each create a
        data key; both keys travel, so each edge reads both comments."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        t = await shared_tenant(central, a, b)
        a.rate(t, "ana", "book", 5, "from a")
        b.rate(t, "bo", "book", 4, "from b")
        for edge in (a, b, a):
            await edge.sync(central)
        expected = {("ana", "book"): "from a", ("bo", "book"): "from b"}
        assert a.comments(t) == b.comments(t) == expected

    async def test_without_the_fleet_key_another_edge_serves_the_comment_as_unreadable(
        self, make_edge: EdgeFactory, central: str, tmp_path: Path
    ) -> None:
        """An edge holding another fleet key stores the sealed rows but cannot open them: it
        serves the rating with the comment unreadable (and its score), never an error."""
        a = make_edge("edge-a")
        stranger = Edge.open(tmp_path / "stranger", "stranger", fleet_key=WrappingKey(b"\x07" * 32))
        try:
            t = await shared_tenant(central, a, stranger)
            a.rate(t, "ana", "book", 5, "not for strangers")
            await a.sync(central)
            await stranger.sync(central)
            [rating] = stranger.store(t).page().ratings
            assert (rating["score"], rating["comment"], rating.get("comment_unreadable")) == (
                5,
                None,
                True,
            )
        finally:
            stranger.close()


class TestDeletionAcrossTheFleet:
    async def test_a_tenant_deleted_on_one_edge_is_shredded_everywhere_backups_included(
        self, make_edge: EdgeFactory, central: str, db: Connection, tmp_path: Path
    ) -> None:
        """A deletes the tenant: the central ratings, data keys, API keys and registry row go
        with the upload, B shreds its own copy at its next sync, and a copy of B's tenant file
        and of the central sealed rows taken before cannot be opened by either edge."""
        a, b, t = await commented_on_a_read_on_b(make_edge, central, "to be forgotten")
        copied_file = tmp_path / "b-tenant-copy.sqlite"
        with (
            contextlib.closing(sqlite3.connect(b.stores.path(t))) as source,
            contextlib.closing(sqlite3.connect(copied_file)) as target,
        ):
            source.backup(target)  # an online backup, as `edge-node backup` takes
        central_copy = [RatingRow(*r) for r in [a.rows(t)[0]]]

        delete_tenant(a.registry, a.stores, t)
        await a.sync(central)
        for table in ("ratings", "tenant_data_keys", "api_keys", "tenants"):
            assert await central_count(db, table, t) == 0, table
        assert await central_count(db, "tenant_deletions", t) == 1

        await b.sync(central)
        assert not b.stores.path(t).exists()
        assert b.registry.get_tenant(t) is None
        assert b.stores.keyring.is_deleted(t)
        for edge in (a, b):
            assert edge.stores.keyring.cipher(t, _key_id(central_copy[0])) is None
        copy = TenantStores(tmp_path / "copies", node_id="b", keyring=b.stores.keyring)
        copied_file.rename(copy.path(t))
        [rating] = copy.get(t).page().ratings
        assert (rating["comment"], rating.get("comment_unreadable")) == (None, True)
        copy.drop(t)

        # An edge that has not heard of the deletion uploads its old rows: nothing comes back.
        await upload_ratings(db, central_copy)
        assert await central_count(db, "ratings", t) == 0

    async def test_a_deletion_made_centrally_flows_down_to_every_edge(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """An operator's INSERT into tenant_deletions destroys the central rows at once, and
        each edge shreds its keys and drops its file and registry rows at its next sync."""
        a, b, t = await commented_on_a_read_on_b(make_edge, central, "short-lived")
        await db.execute("INSERT INTO tenant_deletions (tenant_id, deleted_at) VALUES ($1, 1)", t)
        assert await central_count(db, "ratings", t) == 0
        await asyncio.gather(a.sync(central), b.sync(central))
        for edge in (a, b):
            assert edge.registry.get_tenant(t) is None
            assert not edge.stores.path(t).exists()
            key_store = edge.data_dir / KEYS_DIRECTORY / KEY_STORE_FILE
            assert edge.stores.keyring.is_deleted(t), key_store


def _key_id(row: RatingRow) -> str:
    assert row.comment_sealed is not None
    return row.comment_sealed[1:9].hex()
