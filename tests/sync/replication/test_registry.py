"""The tenant registry through a real central PostgreSQL: tenants and keys created on an edge
reach the others; suspensions, limits and revocations made centrally reach every edge; a key
revoked anywhere stays revoked."""

from __future__ import annotations

import secrets
import uuid

import pytest

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.node_database import open_node_database
from edge_node.tenants.apikeys import hash_key
from edge_node.tenants.registry import TenantRegistry
from sync.postgres import Connection, connect
from tests.support import RunningNode
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge
from tests.test_node_database import write_old_file


async def create_central_tenant(db: Connection, **values: object) -> str:
    tenant_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO tenants (tenant_id, name, plan, status, rate_limit_per_minute,"
        " created_at, updated_at) VALUES ($1, $2, 'flat', $3, $4, $5, $5)",
        tenant_id,
        values.get("name", "central-co"),
        values.get("status", "active"),
        values.get("rate_limit"),
        now_us(),
    )
    return tenant_id


async def create_central_key(db: Connection, tenant_id: str, role: str = "writer") -> str:
    """A key issued centrally: only its hash is stored there; returns the key itself."""
    key_id = secrets.token_hex(8)
    api_key = f"enk_{key_id}_{secrets.token_urlsafe(32)}"
    await db.execute(
        "INSERT INTO api_keys (tenant_id, key_id, key_hash, role, created_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        key_id,
        hash_key(api_key),
        role,
        now_us(),
    )
    return api_key


class TestEdgeToCentral:
    async def test_a_tenant_created_on_an_edge_reaches_the_other_edges(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A tenant and its key created on edge A are uploaded; edge B downloads them and
        accepts A's key; A's registry outbox is empty."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, key = a.registry.create_tenant("acme", plan="tiered", rate_limit_per_minute=60)
        second = a.registry.create_key(tenant.tenant_id, "reader")
        [report] = await a.sync(central)
        assert report.registry_uploaded == 3
        assert a.registry.pending_uploads() == []
        assert await db.fetchval("SELECT count(*) FROM api_keys") == 2

        await b.sync(central)
        assert b.registry.get_tenant(tenant.tenant_id) == tenant
        grant = b.registry.lookup_key(key.api_key)
        assert grant is not None
        assert (grant.tenant_id, grant.role) == (tenant.tenant_id, "admin")
        reader = b.registry.lookup_key(second.api_key)
        assert reader is not None
        assert reader.role == "reader"

    async def test_tenants_created_before_sync_existed_are_uploaded(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """A node.sqlite from before the sync migration has its tenants and keys queued for
        upload by that migration."""
        edge = make_edge("edge-old")
        edge.node_database.close()
        path = edge.data_dir / "node.sqlite"
        path.unlink()
        write_old_file(path, 1)
        conn = sqlite.connect(path)
        conn.execute(
            "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
            " VALUES ('0b7e6a4c-1111-4c55-9a53-5c1e0e8b7d41', 'legacy', 'payg', 1, 1)"
        )
        conn.close()
        edge.node_database = open_node_database(edge.data_dir)
        edge.registry = TenantRegistry(edge.node_database)
        assert [c.tenant.name for c in edge.registry.pending_uploads()] == ["legacy"]
        await edge.sync(central)
        assert edge.registry.pending_uploads() == []

    async def test_a_key_revoked_on_an_edge_is_revoked_everywhere_for_good(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A revocation on edge A reaches the central db and edge B; a central row that later
        says "not revoked" does not bring the key back on any edge."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        _tenant, key = a.registry.create_tenant("acme")
        await a.sync(central)
        await b.sync(central)
        assert b.registry.lookup_key(key.api_key) is not None

        a.registry.revoke_key(key.key_id)
        await a.sync(central)
        assert await db.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys") is True
        await b.sync(central)
        assert b.registry.lookup_key(key.api_key) is None

        # Migration 0003 refuses an un-revoke centrally; with its trigger disabled, the edges'
        # own rule still holds.
        await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_registry_rules")
        await db.execute("UPDATE api_keys SET revoked_at = NULL")
        await a.sync(central)
        await b.sync(central)
        assert a.registry.lookup_key(key.api_key) is None
        assert b.registry.lookup_key(key.api_key) is None


class TestCentralToEdge:
    async def test_a_tenant_suspended_centrally_is_suspended_on_the_edge(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A central suspension and rate-limit change reach an edge's registry in one round,
        so the edge's grants carry them."""
        a = make_edge("edge-a")
        _tenant, key = a.registry.create_tenant("acme")
        await a.sync(central)
        await db.execute(
            "UPDATE tenants SET status = 'suspended', rate_limit_per_minute = 7, updated_at = $1",
            now_us(),
        )
        [report] = await a.sync(central)
        assert report.registry_applied >= 1
        grant = a.registry.lookup_key(key.api_key)
        assert grant is not None
        assert (grant.tenant_status, grant.rate_limit_per_minute) == ("suspended", 7)

    async def test_a_revocation_is_not_held_back_by_a_failing_ratings_upload(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """While the shard refuses every ratings upload with a transient error, a key revoked
        centrally still reaches the edge in that round; the ratings stay queued and the
        tenant is counted as failing."""
        a = make_edge("edge-a")
        tenant, key = a.registry.create_tenant("acme")
        await a.sync(central)
        a.rate(tenant.tenant_id, "u1", "book", 4)
        await db.execute(
            "CREATE FUNCTION busy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'busy, retry' USING ERRCODE = '40001'; END $$;"
            " CREATE TRIGGER busy BEFORE INSERT ON ratings FOR EACH ROW EXECUTE FUNCTION busy()"
        )
        await db.execute("UPDATE api_keys SET revoked_at = $1", now_us())
        worker = a.worker([central])
        await worker.run_once()
        await worker.stop(grace=0)
        assert a.registry.lookup_key(key.api_key) is None
        assert len(a.pending(tenant.tenant_id)) == 1
        [status] = worker.status()
        assert status.failing_tenants == 1
        assert "busy, retry" in str(status.last_tenant_error)

    async def test_the_central_row_wins_over_a_local_status_change(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A status changed on the edge alone is replaced by the central row when that row
        next changes, even if the central write does not touch updated_at."""
        a = make_edge("edge-a")
        tenant, _ = a.registry.create_tenant("acme")
        await a.sync(central)
        a.registry.set_status(tenant.tenant_id, "suspended")
        await a.sync(central)
        assert await db.fetchval("SELECT status FROM tenants") == "active"
        await db.execute("UPDATE tenants SET rate_limit_per_minute = 99")
        await a.sync(central)
        local = a.registry.get_tenant(tenant.tenant_id)
        assert local is not None
        assert (local.status, local.rate_limit_per_minute) == ("active", 99)

    async def test_a_tenant_created_centrally_arrives_with_its_keys_and_ratings(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A tenant, key and rating created only in the central db reach an edge in one round:
        the edge accepts the key and holds the rating."""
        a = make_edge("edge-a")
        tenant_id = await create_central_tenant(db, rate_limit=120)
        api_key = await create_central_key(db, tenant_id)
        await db.execute(
            "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
            " updated_at, origin_node) VALUES ($1, $2, 'u1', 'book', 4, 1, 1, 'admin')",
            tenant_id,
            uuid.uuid4(),
        )
        await a.sync(central)
        grant = a.registry.lookup_key(api_key)
        assert grant is not None
        assert (grant.tenant_id, grant.role) == (tenant_id, "writer")
        assert [r[2:5] for r in a.rows(tenant_id)] == [("u1", "book", 4)]

    async def test_a_registry_larger_than_a_page_arrives_whole(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """With pages of two rows, seven tenants and their keys all arrive."""
        a = make_edge("edge-a")
        tenants = [await create_central_tenant(db, name=f"t{i}") for i in range(7)]
        keys = [await create_central_key(db, t) for t in tenants]
        await a.sync(central, batch_size=2)
        assert sorted(t.tenant_id for t in a.registry.list_tenants()) == sorted(tenants)
        assert all(a.registry.lookup_key(k) is not None for k in keys)

    async def test_a_key_id_taken_here_by_another_tenant_is_left_alone(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A central key whose id collides with a local key of another tenant does not take
        the local key over (key ids are unique per node)."""
        a = make_edge("edge-a")
        tenant, key = a.registry.create_tenant("acme")
        other = await create_central_tenant(db)
        await db.execute(
            "INSERT INTO api_keys (tenant_id, key_id, key_hash, role, created_at)"
            " VALUES ($1, $2, $3, 'admin', 1)",
            other,
            key.key_id,
            "0" * 64,
        )
        await a.sync(central)
        grant = a.registry.lookup_key(key.api_key)
        assert grant is not None
        assert grant.tenant_id == tenant.tenant_id


def admits(edge: Edge, api_key: str) -> bool:
    """Whether the edge would serve this key: known, not revoked, its tenant active."""
    grant = edge.registry.lookup_key(api_key)
    return grant is not None and grant.tenant_status == "active"


class TestOutOfOrderCommits:
    @pytest.mark.parametrize(
        "change",
        [
            "UPDATE tenants SET status = 'suspended', updated_at = 2 WHERE tenant_id = $1",
            "UPDATE api_keys SET revoked_at = 1 WHERE tenant_id = $1",
        ],
        ids=["suspension", "revocation"],
    )
    async def test_a_change_committed_out_of_order_is_not_skipped(
        self, make_edge: EdgeFactory, central: str, change: str
    ) -> None:
        """The central change to tenant A starts first and commits last, the same change to B
        commits in between; an edge syncing in between, one row per page, must not move its
        registry checkpoint past A's transaction: once A commits, A's change arrives too."""
        edge = make_edge("edge-a")
        (a, key_a), (b, key_b) = (edge.registry.create_tenant(n) for n in ("a", "b"))
        await edge.sync(central)
        early, late = await connect(central), await connect(central)
        try:
            early_tx = early.transaction()
            await early_tx.start()
            await early.execute(change, a.tenant_id)
            await late.execute(change, b.tenant_id)
            await edge.sync(central, batch_size=1)
            assert admits(edge, key_a.api_key)

            await early_tx.commit()
            await edge.sync(central, batch_size=1)
            assert not admits(edge, key_a.api_key)
            assert not admits(edge, key_b.api_key)
        finally:
            await early.close()
            await late.close()


class TestOverHttp:
    async def test_a_key_revoked_centrally_is_refused_by_a_serving_node(
        self, node: RunningNode, central: str, db: Connection
    ) -> None:
        """A serving edge node accepts a key, the key is revoked centrally, the node's sync
        worker runs a round, and the node answers the same key with 401."""
        tenant = node.create_tenant()
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        storage = node.storage
        edge = Edge(
            node.config.node_id,
            node.config.data_path,
            storage.node_database,
            storage.registry,
            storage.stores,
        )
        await edge.sync(central)
        async with node.session.get(url, headers=tenant.headers) as response:
            assert response.status == 200
        await db.execute("UPDATE api_keys SET revoked_at = $1", now_us())
        worker = edge.worker([central])
        await worker.run_once()
        await worker.stop(grace=0)
        async with node.session.get(url, headers=tenant.headers) as response:
            assert response.status == 401
