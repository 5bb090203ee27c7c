"""Binding roles to tenants: a database migrated to 0005 upgrades in place and closes the
setting's hole, and `edge-node central bind-role` binds, refuses to move a binding, and names
what is wrong; on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest

from sync.central.schema import load_migrations, migrate
from sync.postgres import Connection, connect
from tests.postgres import PostgresServer
from tests.sync.central.test_schema import (
    SYNC_ROLE,
    TENANT_ROLE,
    create_roles,
    insert_tenant_with_key,
    run_cli,
)

A, B = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
async def at_0005(postgres_server: PostgresServer, postgres_dsn: str) -> str:
    """A database owned by the sync role, migrated by it up to 0005, tenants A and B, and the
    tenant role granted the tables; returns the name of the database."""
    create_roles(postgres_server)
    database = postgres_dsn.rsplit("/", 1)[1]
    postgres_server.sql(f'ALTER DATABASE "{database}" OWNER TO {SYNC_ROLE}')
    sync = await connect(postgres_server.dsn(database, user=SYNC_ROLE))
    try:
        await migrate(sync, [m for m in load_migrations() if m.version <= 5])
        for tenant_id, key_id in ((A, "a" * 16), (B, "b" * 16)):
            await insert_tenant_with_key(sync, tenant_id, key_id)
        await sync.execute(f"GRANT SELECT, UPDATE ON tenants, api_keys TO {TENANT_ROLE}")
    finally:
        await sync.close()
    return database


async def visible(conn: Connection, setting: str) -> list[str]:
    await conn.execute(f"SET edge_node.tenant_id = '{setting}'")
    return [r[0] for r in await conn.fetch("SELECT tenant_id::text FROM tenants")]


class TestUpgradeFrom0005:
    async def test_migrating_closes_the_setting_until_the_role_is_bound(
        self, postgres_server: PostgresServer, at_0005: str
    ) -> None:
        """At 0005 the tenant role reads B by setting B; `central migrate` applies 0006 and
        what came after it, after which the role reads nothing, and once bound to A reads A
        whatever it sets; a second migrate applies nothing."""
        sync_dsn = postgres_server.dsn(at_0005, user=SYNC_ROLE)
        tenant = await connect(postgres_server.dsn(at_0005, user=TENANT_ROLE))
        try:
            assert await visible(tenant, B) == [B]  # the hole 0006 closes
            done = run_cli("central", "migrate", "--dsn", sync_dsn)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)[0]["applied"][0] == 6
            assert await visible(tenant, B) == []
            bound = run_cli("central", "bind-role", TENANT_ROLE, A, "--dsn", sync_dsn)
            assert bound.returncode == 0, bound.stderr
            assert await visible(tenant, B) == [A]
            assert await visible(tenant, "") == [A]
            again = run_cli("central", "migrate", "--dsn", sync_dsn)
            assert json.loads(again.stdout)[0]["applied"] == []
        finally:
            await tenant.close()


class TestBindRoleCommand:
    @pytest.fixture
    def dsn(self, postgres_server: PostgresServer, postgres_dsn: str) -> str:
        create_roles(postgres_server)
        done = run_cli("central", "migrate", "--dsn", postgres_dsn)
        assert done.returncode == 0, done.stderr
        return postgres_dsn

    def test_binding_is_reported_and_repeating_it_changes_nothing(self, dsn: str) -> None:
        """The command prints the binding per database; run again it reports no change."""
        first = run_cli("central", "bind-role", TENANT_ROLE, A, "--dsn", dsn)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == [
            {
                "dsn": dsn,
                "role": TENANT_ROLE,
                "tenant_id": A,
                "scoped_by_setting": False,
                "changed": True,
            }
        ]
        again = json.loads(run_cli("central", "bind-role", TENANT_ROLE, A, "--dsn", dsn).stdout)
        assert again[0]["changed"] is False

    def test_a_bound_role_is_never_moved_to_another_tenant(self, dsn: str) -> None:
        """Binding a bound role to another tenant, or marking it trusted, exits 1 and says
        what it is bound to; the binding stays."""
        assert run_cli("central", "bind-role", TENANT_ROLE, A, "--dsn", dsn).returncode == 0
        for scope in ([B], ["--scoped-by-setting"]):
            moved = run_cli("central", "bind-role", TENANT_ROLE, *scope, "--dsn", dsn)
            assert moved.returncode == 1
            assert f"already bound to tenant {A}" in moved.stderr
        again = json.loads(run_cli("central", "bind-role", TENANT_ROLE, A, "--dsn", dsn).stdout)
        assert again[0]["changed"] is False

    def test_a_trusted_role_is_marked_scoped_by_setting(self, dsn: str) -> None:
        """--scoped-by-setting marks the role trusted, with no tenant of its own."""
        done = run_cli("central", "bind-role", TENANT_ROLE, "--scoped-by-setting", "--dsn", dsn)
        assert done.returncode == 0, done.stderr
        [report] = json.loads(done.stdout)
        assert (report["tenant_id"], report["scoped_by_setting"]) == (None, True)

    def test_an_unknown_role_or_a_bad_tenant_id_is_refused(self, dsn: str) -> None:
        """A role that does not exist, or a tenant id that is not a UUID, exits 1 naming it;
        giving neither a tenant nor --scoped-by-setting is a usage error."""
        missing = run_cli("central", "bind-role", "no_such_role_x", A, "--dsn", dsn)
        assert missing.returncode == 1
        assert "no role named 'no_such_role_x'" in missing.stderr
        bad = run_cli("central", "bind-role", TENANT_ROLE, "tenant-a", "--dsn", dsn)
        assert bad.returncode == 1
        assert "'tenant-a' is not a tenant id" in bad.stderr
        assert run_cli("central", "bind-role", TENANT_ROLE, "--dsn", dsn).returncode == 2

    def test_every_configured_shard_gets_the_binding(
        self, postgres_server: PostgresServer, postgres_dsns: tuple[str, str]
    ) -> None:
        """Without --dsn, the role is bound in every database of central.dsns."""
        create_roles(postgres_server)
        env = {"EDGE_NODE_CENTRAL_DSNS": json.dumps(postgres_dsns)}
        assert run_cli("central", "migrate", env=env).returncode == 0
        done = run_cli("central", "bind-role", TENANT_ROLE, A, env=env)
        assert done.returncode == 0, done.stderr
        assert [r["dsn"] for r in json.loads(done.stdout)] == list(postgres_dsns)
