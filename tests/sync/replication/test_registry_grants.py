"""A tenant's own allowance and an API key's credit grant through a real central PostgreSQL:
made on one edge, they reach the others; each node spends its own balance of a grant."""

from __future__ import annotations

import uuid

from edge_node import sqlite
from edge_node.node_database import open_node_database
from edge_node.tenants import schema
from edge_node.tenants.model import KeyCredits
from edge_node.tenants.registry import TenantRegistry
from sync.postgres import Connection, connect
from tests.support import RunningNode
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge

CREDITS_EXHAUSTED = "urn:edge-node:problem:credits-exhausted"


def serving_edge(node: RunningNode) -> Edge:
    """The sync side of a serving node: its own storage, synced by the test."""
    storage = node.storage
    return Edge(
        node.config.node_id,
        node.config.data_path,
        storage.node_database,
        storage.registry,
        storage.stores,
    )


class TestAllowancesAndGrants:
    async def test_a_tenant_quota_and_a_key_grant_reach_the_other_edges(
        self, make_edge: EdgeFactory, any_central: str
    ) -> None:
        """A tenant with quota 5 / block and a key with 3 credits (refilled to 2 every hour)
        made on edge A are stored centrally and arrive whole on edge B (on plain PostgreSQL
        and on Citus)."""
        central = any_central
        db = await connect(central)
        try:
            await self._reach_the_other_edges(make_edge, central, db)
        finally:
            await db.close()

    async def _reach_the_other_edges(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _admin = a.registry.create_tenant("acme", quota=5, quota_policy="block")
        key = a.registry.create_key(tenant.tenant_id, "writer", KeyCredits(3, 2, 3600))
        await a.sync(central)
        assert await db.fetchrow("SELECT quota, quota_policy FROM tenants") == (5, "block")
        assert await db.fetchrow(
            "SELECT credits, refill, refill_every FROM api_keys WHERE key_id = $1", key.key_id
        ) == (3, 2, 3600)

        await b.sync(central)
        copied = b.registry.get_tenant(tenant.tenant_id)
        assert copied is not None
        assert (copied.quota, copied.quota_policy) == (5, "block")
        grants = {k[0]: k[4] for k in b.registry.list_keys(tenant.tenant_id)}
        assert grants == {_admin.key_id: None, key.key_id: KeyCredits(3, 2, 3600)}

    async def test_an_allowance_changed_centrally_reaches_every_edge(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """The central row is the tenant's truth, its allowance too: a change there (back to
        the plan's: NULL) replaces what the edges hold."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _key = a.registry.create_tenant("acme", quota=5, quota_policy="block")
        await a.sync(central)
        await b.sync(central)
        await db.execute("UPDATE tenants SET quota = 7, quota_policy = 'overage'")
        await a.sync(central)
        await b.sync(central)
        for edge in (a, b):
            copied = edge.registry.get_tenant(tenant.tenant_id)
            assert copied is not None
            assert (copied.quota, copied.quota_policy) == (7, "overage")
        await db.execute("UPDATE tenants SET quota = NULL, quota_policy = NULL")
        await b.sync(central)
        copied = b.registry.get_tenant(tenant.tenant_id)
        assert copied is not None
        assert (copied.quota, copied.quota_policy) == (None, None)

    async def test_a_grant_uploaded_late_fills_the_keys_that_have_none(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A key that reached the central database and edge B without its grant (uploaded
        before the central database carried grants) gets it once edge A uploads it again, as
        node.sqlite's migration 10 queues it; a grant is never replaced afterwards."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _admin = a.registry.create_tenant("acme")
        key = a.registry.create_key(tenant.tenant_id, "writer", KeyCredits(3))
        await a.sync(central)
        await db.execute("UPDATE api_keys SET credits = NULL WHERE key_id = $1", key.key_id)
        await b.sync(central)
        assert {k[0]: k[4] for k in b.registry.list_keys(tenant.tenant_id)}[key.key_id] is None

        a.node_database.execute(
            "INSERT INTO registry_outbox (tenant_id, key_id) SELECT tenant_id, key_id"
            " FROM api_keys WHERE credits IS NOT NULL"
        )
        await a.sync(central)
        await b.sync(central)
        assert {k[0]: k[4] for k in b.registry.list_keys(tenant.tenant_id)}[
            key.key_id
        ] == KeyCredits(3)

        await db.execute("UPDATE api_keys SET credits = 9 WHERE key_id = $1", key.key_id)
        a.node_database.execute(
            "INSERT INTO registry_outbox (tenant_id, key_id) VALUES (?, ?)",
            (tenant.tenant_id, key.key_id),
        )
        await a.sync(central)
        assert await db.fetchval("SELECT credits FROM api_keys WHERE key_id = $1", key.key_id) == 9
        await b.sync(central)
        assert {k[0]: k[4] for k in b.registry.list_keys(tenant.tenant_id)}[
            key.key_id
        ] == KeyCredits(3)

    async def test_keys_with_a_grant_are_uploaded_again_by_the_node_migration(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A node.sqlite whose keys were uploaded before the central database carried grants
        (tenants component at version 9, its outbox empty) queues its keys with a grant again
        when opened, and the next round gives the central row the grant."""
        edge = make_edge("edge-old")
        edge.node_database.close()
        (edge.data_dir / "node.sqlite").unlink()
        conn = open_node_database(edge.data_dir)
        sqlite.migrate(conn, schema.MIGRATIONS[:9], component=schema.COMPONENT)
        tenant_id, key_id = str(uuid.uuid4()), "00112233445566aa"
        conn.execute(
            "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
            " VALUES (?, 'acme', 'payg', 1, 1)",
            (tenant_id,),
        )
        conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, role, created_at, credits)"
            " VALUES (?, ?, ?, 'writer', 1, 3)",
            (key_id, tenant_id, "0" * 64),
        )
        for statement in (
            "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
            " VALUES ($1, 'acme', 'payg', 1, 1)",
            "INSERT INTO api_keys (tenant_id, key_id, key_hash, role, created_at)"
            " VALUES ($1, $2, $3, 'writer', 1)",
        ):
            await db.execute(statement, *(tenant_id, key_id, "0" * 64)[: statement.count("$")])
        conn.execute("DELETE FROM registry_outbox")
        conn.close()

        edge.node_database = open_node_database(edge.data_dir)
        edge.registry = TenantRegistry(edge.node_database)
        assert [c.key.key_id for c in edge.registry.pending_uploads() if c.key] == [key_id]
        await edge.sync(central)
        assert await db.fetchval("SELECT credits FROM api_keys WHERE key_id = $1", key_id) == 3


class TestOverHttp:
    async def test_a_serving_node_spends_its_own_balance_of_a_downloaded_grant(
        self, make_edge: EdgeFactory, node: RunningNode, central: str
    ) -> None:
        """A key made on edge A with 3 credits is served 3 billable
        requests by node B, which downloaded it, and refused the 4th with 429
        credits-exhausted: each node starts its own balance at the grant."""
        a = make_edge("edge-a")
        tenant, _admin = a.registry.create_tenant("acme", quota=5, quota_policy="block")
        key = a.registry.create_key(tenant.tenant_id, "reader", KeyCredits(3))
        await a.sync(central)
        await serving_edge(node).sync(central)

        url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
        headers = {"X-API-Key": key.api_key}
        statuses = []
        for _ in range(3):
            async with node.session.get(url, headers=headers) as response:
                await response.read()
                statuses.append(response.status)
        assert statuses == [200] * 3
        async with node.session.get(url, headers=headers) as refused:
            assert refused.status == 429
            assert refused.content_type == "application/problem+json"
            assert (await refused.json())["type"] == CREDITS_EXHAUSTED
