"""The central schema on a Citus cluster of the test's own: `central migrate` distributes every
tenant table on tenant_id, colocated, keeps tenant_roles a reference table, and row-level
security isolates tenants on the workers as on plain PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from edge_node.clock import now_ms
from edge_node.errors import SyncError
from edge_node.usage.quotas import calendar_month
from sync.central import citus
from sync.central.roles import bind_role
from sync.central.schema import load_migrations, migrate, migrate_dsns
from sync.leases.central import claim
from sync.postgres import Connection, connect, translated
from tests.citus import CitusCluster
from tests.sync.central.test_schema import insert_tenant_with_key

ALL_VERSIONS = [m.version for m in load_migrations()]
TENANT_ROLE = "edge_citus_tenant_test"
APP_ROLE = "edge_citus_app_test"


@pytest.fixture
async def migrated(citus_dsn: str) -> AsyncIterator[Connection]:
    """A connection, as the sync role, to a Citus coordinator migrated by `central migrate`."""
    await migrate_dsns([citus_dsn])
    connection = await connect(citus_dsn)
    yield connection
    await connection.close()


async def add_rating(conn: Connection, tenant_id: str, user: str) -> None:
    await conn.execute(
        "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at, updated_at,"
        " origin_node) VALUES ($1, $2, $3, 'item', 4, 1, 1, 'node-a')",
        tenant_id,
        uuid.uuid4(),
        user,
    )


class TestDistribution:
    async def test_migrate_distributes_every_tenant_table_colocated(self, citus_dsn: str) -> None:
        """The report lists every tenant table distributed on tenant_id and tenant_roles as a
        reference table; all tenant tables share one colocation group; the coordinator's
        bookkeeping stays local; a second run applies and distributes nothing more."""
        (report,) = await migrate_dsns([citus_dsn])
        assert report["applied"] == ALL_VERSIONS
        assert report["distributed"] == {
            **dict.fromkeys(citus.DISTRIBUTED, "tenant_id"),
            "tenant_roles": "reference",
        }
        conn = await connect(citus_dsn)
        try:
            rows = await conn.fetch(
                "SELECT logicalrelid::regclass::text AS t, colocationid,"
                " column_to_column_name(logicalrelid, partkey) AS col FROM pg_dist_partition"
                " WHERE partmethod = 'h'"
            )
            assert {r["t"] for r in rows} == set(citus.DISTRIBUTED)
            assert {r["col"] for r in rows} == {"tenant_id"}
            assert len({r["colocationid"] for r in rows}) == 1
            local = await conn.fetchval(
                "SELECT count(*) FROM pg_dist_partition"
                " WHERE logicalrelid IN ('schema_migrations'::regclass, 'sync_horizons'::regclass)"
            )
            assert local == 0
            workers = await conn.fetch(
                "SELECT success, result FROM run_command_on_workers("
                f"$$SELECT to_regclass('{citus.WORKER_BOUNDS_TABLE}') IS NOT NULL$$)"
            )
            assert [(r["success"], r["result"]) for r in workers] == [(True, "t"), (True, "t")]
        finally:
            await conn.close()
        (again,) = await migrate_dsns([citus_dsn])
        assert again["applied"] == []

    async def test_a_later_migration_alters_the_tables_already_distributed(
        self, citus_dsn: str
    ) -> None:
        """A cluster migrated and distributed by a release before 0007 gets the allowance and
        grant columns, with their checks, on every shard of tenants and api_keys; and 0008's
        lease tables, distributed then, leave with a tenant deleted afterwards."""
        conn = await connect(citus_dsn)
        try:
            await migrate(conn, [m for m in load_migrations() if m.version < 7])
            assert await citus.distribution(conn)
            assert await migrate(conn) == [v for v in ALL_VERSIONS if v >= 7]
            tenant_id, key_id = str(uuid.uuid4()), uuid.uuid4().hex[:16]
            await insert_tenant_with_key(conn, tenant_id, key_id)
            await conn.execute("UPDATE tenants SET quota = 5, quota_policy = 'block'")
            await conn.execute("UPDATE api_keys SET credits = 3, refill = 2, refill_every = 60")
            for table, column in (("tenants", "quota"), ("api_keys", "credits")):
                shards = await conn.fetch(
                    "SELECT success, result FROM run_command_on_shards($1,"
                    f" $$SELECT coalesce(sum({column}), 0) FROM %s$$)",
                    table,
                )
                assert all(r["success"] for r in shards), shards
                assert sum(int(r["result"]) for r in shards) == (5 if table == "tenants" else 3)
            for bad in (
                "UPDATE tenants SET quota = -1",
                "UPDATE tenants SET quota_policy = 'refund'",
                "UPDATE api_keys SET credits = -1",
                "UPDATE api_keys SET refill_every = 0",
            ):
                with pytest.raises(SyncError, match="check constraint"), translated():
                    await conn.execute(bad)
            # 0008's tables, distributed after the others, go with a tenant's deletion.
            await claim(
                conn, tenant_id=tenant_id, period_start=calendar_month(now_ms())[0],
                node_id="edge-1", allowance=10,
                spent=0, wanted=4, lease_seconds=60,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO tenant_deletions (tenant_id, deleted_at) VALUES ($1, 1)", tenant_id
            )
            for table in ("quota_periods", "quota_leases", "tenants"):
                left = await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_id
                )
                assert left == 0, table
        finally:
            await conn.close()

    async def test_triggers_stamp_rows_on_the_workers(self, migrated: Connection) -> None:
        """The change-position trigger runs on the shards: each tenant's row is stamped with a
        transaction id, and a deletion cascades through the colocated shards."""
        tenants = [str(uuid.uuid4()) for _ in range(6)]
        for tenant_id in tenants:
            await insert_tenant_with_key(migrated, tenant_id, uuid.uuid4().hex[:16])
            await add_rating(migrated, tenant_id, "u")
        stamped = await migrated.fetchval(
            "SELECT count(*) FROM ratings WHERE change_xid::text::bigint > 0"
        )
        assert stamped == len(tenants)
        await migrated.execute(
            "INSERT INTO tenant_deletions (tenant_id, deleted_at) VALUES ($1, 1)", tenants[0]
        )
        for table in ("tenants", "api_keys", "ratings"):
            left = await migrated.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                tenants[0],
            )
            assert left == 0, table
        await add_rating(migrated, tenants[0], "late")  # dropped: the tenant is deleted
        assert (
            await migrated.fetchval("SELECT count(*) FROM ratings WHERE tenant_id = $1", tenants[0])
            == 0
        )

    async def test_row_level_security_is_on_and_not_forced_on_every_shard(
        self, citus_dsn: str, migrated: Connection
    ) -> None:
        """Every shard of every tenant table has row-level security enabled but not forced, so
        that a logical shard move (whose subscription applies changes as a member of the
        tables' owner) may write into it; a table found forced is unforced by the next
        migrate, as a database migrated by an earlier release is."""

        async def shard_states() -> dict[str, set[tuple[bool, str]]]:
            states = {}
            for table in citus.DISTRIBUTED:
                shards = await migrated.fetch(
                    "SELECT success, result FROM run_command_on_shards($1, $$SELECT"
                    " relrowsecurity::text || '/' || relforcerowsecurity::text FROM pg_class"
                    " WHERE oid = '%s'::regclass$$)",
                    table,
                )
                states[table] = {(r["success"], r["result"]) for r in shards}
            return states

        unforced = {table: {(True, "true/false")} for table in citus.DISTRIBUTED}
        assert await shard_states() == unforced
        await migrated.execute("ALTER TABLE ratings FORCE ROW LEVEL SECURITY")
        assert (await shard_states())["ratings"] == {(True, "true/true")}
        await migrate_dsns([citus_dsn])
        assert await shard_states() == unforced


class TestRowLevelSecurity:
    @pytest.fixture
    async def roles(
        self, citus_cluster: CitusCluster, migrated: Connection
    ) -> AsyncIterator[tuple[str, str, str]]:
        """Tenants A and B with a rating each; a login bound to A and a trusted application
        login, both granted DML on the tenant tables (roles propagate to the workers)."""
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        for tenant_id in (a, b):
            await insert_tenant_with_key(migrated, tenant_id, uuid.uuid4().hex[:16])
            await add_rating(migrated, tenant_id, "u")
        for role in (TENANT_ROLE, APP_ROLE):
            await migrated.execute(f"DROP ROLE IF EXISTS {role}")
            await migrated.execute(f"CREATE ROLE {role} LOGIN")
            await migrated.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, api_keys, ratings TO {role}"
            )
        await bind_role(migrated, TENANT_ROLE, a)
        await bind_role(migrated, APP_ROLE, None)
        yield a, b, await migrated.fetchval("SELECT current_database()")
        for role in (TENANT_ROLE, APP_ROLE):
            await migrated.execute(f"DELETE FROM tenant_roles WHERE role = '{role}'::regrole")
            await migrated.execute(f"DROP OWNED BY {role}")
            await migrated.execute(f"DROP ROLE {role}")

    async def test_a_bound_role_sees_and_writes_only_its_tenant(
        self, citus_cluster: CitusCluster, roles: tuple[str, str, str]
    ) -> None:
        """On the workers' shards a login bound to A reads A's rows only, whatever it sets, and
        its write of a B row is refused by the policy."""
        a, b, database = roles
        conn = await connect(citus_cluster.coordinator.dsn(database, user=TENANT_ROLE))
        try:
            await conn.execute(f"SET edge_node.tenant_id = '{b}'")
            seen = {str(r[0]) for r in await conn.fetch("SELECT tenant_id FROM ratings")}
            assert seen == {a}
            assert await conn.fetchval("SELECT count(*) FROM ratings WHERE tenant_id = $1", b) == 0
            with pytest.raises(SyncError, match="row-level security"), translated():
                await add_rating(conn, b, "intruder")
            await add_rating(conn, a, "second")
        finally:
            await conn.close()

    async def test_a_trusted_role_is_scoped_by_set_local_on_the_workers(
        self, citus_cluster: CitusCluster, roles: tuple[str, str, str]
    ) -> None:
        """A trusted application role scopes each transaction with SET LOCAL: with
        citus.propagate_set_commands = 'local' the setting reaches the workers, which then
        show that tenant's rows only; without a setting it sees nothing."""
        _, b, database = roles
        conn = await connect(citus_cluster.coordinator.dsn(database, user=APP_ROLE))
        try:
            assert await conn.fetchval("SELECT count(*) FROM ratings") == 0
            await conn.execute("SET citus.propagate_set_commands = 'local'")
            async with conn.transaction():
                await conn.execute(f"SET LOCAL edge_node.tenant_id = '{b}'")
                seen = {str(r[0]) for r in await conn.fetch("SELECT tenant_id FROM ratings")}
            assert seen == {b}
        finally:
            await conn.close()
