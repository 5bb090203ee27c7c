"""The sync worker on Citus as the roles docs/sync.md recommends, none of them a superuser.

The operator (a superuser) creates the database with the extension on every node, registers
the workers and hands the database to the sync role, `edge_sync`, a plain login. `central
migrate` runs as that role and so owns the tables; the edges sync as another plain login
granted it (`GRANT edge_sync TO edge_sync_eu`), with neither superuser nor BYPASSRLS; row-level
security keeps isolating every other role's tenant on the workers meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from sync.central.roles import bind_role
from sync.central.schema import migrate_dsns
from sync.postgres import Connection, connect
from tests.citus import CitusCluster
from tests.sync.conftest import EdgeFactory
from tests.sync.support import central_rows, rows_hash

OWNER = "edge_sync_citus_test"  # runs `central migrate`: owns the tables
SYNC_LOGIN = "edge_sync_eu_citus_test"  # what the edges connect as: granted OWNER
TENANT_ROLE = "edge_tenant_citus_test"  # a tenant's own login, bound to one tenant


@dataclass
class Central:
    database: str
    owner: Connection  # as the sync role, to look at the central rows

    def dsn(self, cluster: CitusCluster, user: str) -> str:
        return cluster.coordinator.dsn(self.database, user=user)


def create_role(cluster: CitusCluster, role: str) -> None:
    """A plain login, neither superuser nor BYPASSRLS, on every node (roles are per server)."""
    for node in cluster.nodes:
        node.sql(
            "DO $$ BEGIN"
            f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            f" THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
        )


@pytest.fixture
async def central(citus_cluster: CitusCluster, citus_dsn: str) -> AsyncIterator[Central]:
    """A Citus database owned by OWNER on every node and migrated by it; SYNC_LOGIN granted
    OWNER; TENANT_ROLE granted reads of the tenant tables."""
    database = citus_dsn.rsplit("/", 1)[1]
    for role in (OWNER, SYNC_LOGIN, TENANT_ROLE):
        create_role(citus_cluster, role)
    for node in [*citus_cluster.workers, citus_cluster.coordinator]:
        node.sql(f"GRANT {OWNER} TO {SYNC_LOGIN}")
        node.sql(f'ALTER DATABASE "{database}" OWNER TO {OWNER}')
    owner_dsn = citus_cluster.coordinator.dsn(database, user=OWNER)
    await migrate_dsns([owner_dsn])
    central = Central(database, await connect(owner_dsn))
    try:
        await central.owner.execute(f"GRANT SELECT ON tenants, ratings TO {TENANT_ROLE}")
        yield central
    finally:
        await central.owner.close()


async def test_edges_sync_through_citus_as_a_plain_login_granted_the_sync_role(
    citus_cluster: CitusCluster, central: Central, make_edge: EdgeFactory
) -> None:
    """Edge A uploads ratings of two tenants and edge B downloads them, both connecting as
    the login granted the sync role: B ends with exactly the central rows. That login is no
    superuser and cannot bypass row-level security, and a role bound to tenant A still reads
    A's ratings only, on the workers' shards."""
    login = await connect(central.dsn(citus_cluster, SYNC_LOGIN))
    try:
        powers = await login.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(powers) == (False, False)
    finally:
        await login.close()
    a, b = make_edge("edge-a"), make_edge("edge-b")
    tenants = [a.registry.create_tenant(name)[0].tenant_id for name in ("acme", "globex")]
    for n in range(30):
        for t in tenants:
            a.rate(t, f"u{n % 12}", f"item{n % 4}", 1 + n % 5, f"#{n}")
    dsn = central.dsn(citus_cluster, SYNC_LOGIN)
    await a.sync(dsn)
    await b.sync(dsn)
    await b.sync(dsn)  # the tenants reached B in the first round, their ratings join now
    for t in tenants:
        expected = await central_rows(central.owner, t)
        assert len(expected) == len(a.rows(t)) > 0
        assert rows_hash(b.rows(t)) == rows_hash(expected) == rows_hash(a.rows(t))

    await bind_role(central.owner, TENANT_ROLE, tenants[0])
    tenant = await connect(central.dsn(citus_cluster, TENANT_ROLE))
    try:
        await tenant.execute(f"SET edge_node.tenant_id = '{tenants[1]}'")
        seen = {str(r[0]) for r in await tenant.fetch("SELECT tenant_id FROM ratings")}
        assert seen == {tenants[0]}
    finally:
        await tenant.close()
