"""The central schema: migrations applied once under a lock, Citus-ready keys, change positions
safe under concurrent writers, and row-level security by tenant; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator

import pytest

from edge_node.errors import PermanentSyncError, SyncError
from sync.central.schema import (
    MIGRATION_LOCK,
    Migration,
    load_migrations,
    migrate,
    schema_version,
)
from sync.postgres import Connection, connect, translated
from tests.cli.test_cli import EXIT_CONFIG, clean_environment, edge_node_command
from tests.postgres import PostgresServer, free_port

TENANT_TABLES = ("tenants", "api_keys", "ratings")
ALL_VERSIONS = [m.version for m in load_migrations()]
SYNC_ROLE = "edge_sync_test"
TENANT_ROLE = "edge_tenant_test"
TENANT_A = str(uuid.uuid4())
TENANT_B = str(uuid.uuid4())


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[Connection]:
    connection = await connect(postgres_dsn)
    yield connection
    await connection.close()


class TestMigrate:
    async def test_empty_database_gets_the_whole_schema(self, conn: Connection) -> None:
        """On an empty database every migration applies; the tables, the score view and the
        change-position triggers exist, and RLS is enabled and forced on every tenant table."""
        assert await migrate(conn) == ALL_VERSIONS
        assert await schema_version(conn) == ALL_VERSIONS[-1]
        rows = await conn.fetch(
            "SELECT relname, relkind::text, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')"
        )
        found = {
            r["relname"]: (r["relkind"], r["relrowsecurity"], r["relforcerowsecurity"])
            for r in rows
        }
        assert found == {
            "schema_migrations": ("r", False, False),
            "tenants": ("r", True, True),
            "api_keys": ("r", True, True),
            "ratings": ("r", True, True),
            "item_scores": ("v", False, False),
            "sync_horizons": ("r", False, False),
            "tenant_data_keys": ("r", True, True),
            "tenant_deletions": ("r", True, True),
            "billing_events": ("r", True, True),
            "tenant_roles": ("r", True, True),
            "quota_periods": ("r", True, True),
            "quota_leases": ("r", True, True),
        }
        triggers = await conn.fetch(
            "SELECT tgrelid::regclass::text AS t FROM pg_trigger"
            " WHERE NOT tgisinternal AND tgname LIKE '%change_xid'"
        )
        assert sorted(r["t"] for r in triggers) == sorted(
            (*TENANT_TABLES, "tenant_data_keys", "tenant_deletions", "billing_events")
        )

    async def test_rerun_is_a_no_op(self, conn: Connection) -> None:
        """A second run applies nothing and leaves the record of the first untouched."""
        await migrate(conn)
        before = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        assert await migrate(conn) == []
        assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == before

    async def test_concurrent_migrations_take_turns(self, postgres_dsn: str) -> None:
        """Two nodes migrating at once: both wait on the advisory lock, which each migration
        takes in turn, so every migration is applied exactly once (by one or the other, the
        other finding it done), and neither fails."""
        holder, first, second = [await connect(postgres_dsn) for _ in range(3)]
        try:
            blocker = holder.transaction()
            await blocker.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            runs = [asyncio.create_task(migrate(c)) for c in (first, second)]
            await wait_for_lock_waiters(holder, 2)
            await blocker.commit()
            results = await asyncio.gather(*runs)
        finally:
            for c in (holder, first, second):
                await c.close()
        assert sorted(results[0] + results[1]) == ALL_VERSIONS
        assert all(run == sorted(run) for run in results)

    async def test_a_changed_migration_is_refused(self, conn: Connection) -> None:
        """A recorded migration whose text differs from the shipped one stops the run."""
        await migrate(conn)
        shipped = load_migrations()[0]
        edited = Migration(shipped.version, shipped.name, shipped.sql + "\n-- edited\n")
        with pytest.raises(PermanentSyncError, match="applied from a different text"):
            await migrate(conn, [edited])

    async def test_tenant_id_leads_every_key_and_there_are_no_sequences(
        self, conn: Connection
    ) -> None:
        """Citus-ready: every primary and unique key of a tenant table starts with tenant_id,
        every foreign key includes it, and no sequence exists for distribution to break."""
        await migrate(conn)
        keys = await conn.fetch(
            "SELECT c.conrelid::regclass::text AS t, c.contype::text,"
            " (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(c.conkey)"
            "   WITH ORDINALITY AS k(n, i) JOIN pg_attribute a"
            "   ON a.attrelid = c.conrelid AND a.attnum = k.n) AS columns"
            " FROM pg_constraint c WHERE c.contype IN ('p', 'u', 'f')"
            " AND c.conrelid::regclass::text = ANY($1)",
            list(TENANT_TABLES),
        )
        assert {(k["t"], k["contype"]) for k in keys} >= {(t, "p") for t in TENANT_TABLES}
        for key in keys:
            assert key["columns"][0] == "tenant_id", dict(key)
        assert await conn.fetchval("SELECT count(*) FROM pg_sequences") == 0


class TestChangePositions:
    async def test_every_write_is_stamped_with_its_transaction(self, conn: Connection) -> None:
        """Inserts and updates get the writing transaction's xid8, whatever the writer says."""
        await migrate(conn)
        async with conn.transaction():
            await insert_rating(conn, TENANT_A, "u1", "i1", change_xid="1")
            xid = await conn.fetchval("SELECT pg_current_xact_id()")
        assert await conn.fetchval("SELECT change_xid FROM ratings") == xid
        await conn.execute("UPDATE ratings SET score = 4")
        assert await conn.fetchval("SELECT change_xid > $1::text::xid8 FROM ratings", str(xid))

    async def test_a_checkpoint_below_the_horizon_never_skips_a_late_commit(
        self, postgres_dsn: str
    ) -> None:
        """Writer A starts first and commits last: a reader capped at the oldest running
        transaction does not move past A's row, and gets it once A commits; a checkpoint
        taken from the newest position seen would have skipped it for good."""
        setup, early, late, reader = [await connect(postgres_dsn) for _ in range(4)]
        try:
            await migrate(setup)
            early_tx, late_tx = early.transaction(), late.transaction()
            await early_tx.start()
            await insert_rating(early, TENANT_A, "u-early", "i1")
            await late_tx.start()
            await insert_rating(late, TENANT_A, "u-late", "i1")
            await late_tx.commit()

            seen, checkpoint = await read_changes(reader, TENANT_A, since="0")
            assert seen == []  # u-late is visible but at or above the horizon: not yet
            newest = await reader.fetchval("SELECT max(change_xid)::text FROM ratings")

            await early_tx.commit()
            seen, _ = await read_changes(reader, TENANT_A, since=checkpoint)
            assert sorted(seen) == ["u-early", "u-late"]
            naive = await reader.fetch(
                "SELECT user_id FROM ratings WHERE change_xid > $1::text::xid8", newest
            )
            assert naive == []  # what a "newest seen" checkpoint would have returned
        finally:
            for c in (setup, early, late, reader):
                await c.close()

    async def test_item_scores_count_live_ratings(self, conn: Connection) -> None:
        """The score view aggregates live ratings per item: count, total and histogram."""
        await migrate(conn)
        for user, score in (("u1", 5), ("u2", 3), ("u3", 5)):
            await insert_rating(conn, TENANT_A, user, "book", score=score)
        await conn.execute("UPDATE ratings SET deleted = true WHERE user_id = 'u2'")
        row = await conn.fetchrow("SELECT * FROM item_scores WHERE item_id = 'book'")
        assert (row["count"], row["total"], row["s3"], row["s5"]) == (2, 10, 0, 2)


class TestRowLevelSecurity:
    @pytest.fixture
    async def tenants(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> AsyncIterator[dict[str, Connection]]:
        """Schema migrated by a non-superuser sync role owning the database; tenants A and B
        with a key and a rating each; connections as the sync role and as a trusted
        application role, which scopes itself by the setting edge_node.tenant_id."""
        create_roles(postgres_server)
        database = postgres_dsn.rsplit("/", 1)[1]
        postgres_server.sql(f'ALTER DATABASE "{database}" OWNER TO {SYNC_ROLE}')
        sync = await connect(postgres_server.dsn(database, user=SYNC_ROLE))
        tenant = await connect(postgres_server.dsn(database, user=TENANT_ROLE))
        try:
            await migrate(sync)
            for tenant_id, key_id in ((TENANT_A, "a" * 16), (TENANT_B, "b" * 16)):
                await insert_tenant_with_key(sync, tenant_id, key_id)
                await insert_rating(sync, tenant_id, "u1", "book")
            await sync.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, api_keys, ratings"
                f" TO {TENANT_ROLE}; GRANT SELECT ON item_scores TO {TENANT_ROLE}"
            )
            await sync.execute(
                "INSERT INTO tenant_roles (role, scoped_by_setting) VALUES ($1, true)", TENANT_ROLE
            )
            await tenant.execute("SET edge_node.tenant_id = $$" + TENANT_A + "$$")
            yield {"sync": sync, "tenant": tenant}
        finally:
            await sync.close()
            await tenant.close()

    async def test_a_tenant_reads_only_its_own_rows(self, tenants: dict[str, Connection]) -> None:
        """With edge_node.tenant_id set to A, every table and the score view show only A."""
        tenant = tenants["tenant"]
        for relation in (*TENANT_TABLES, "item_scores"):
            rows = await tenant.fetch(f"SELECT tenant_id::text FROM {relation}")
            assert [r["tenant_id"] for r in rows] == [TENANT_A], relation

    async def test_a_tenant_cannot_update_or_delete_other_rows(
        self, tenants: dict[str, Connection]
    ) -> None:
        """UPDATE and DELETE aimed at B's rows change nothing; B's rows are intact."""
        tenant, sync = tenants["tenant"], tenants["sync"]
        for table in TENANT_TABLES:
            changed = await tenant.execute(
                f"UPDATE {table} SET created_at = 99 WHERE tenant_id = $1",
                TENANT_B,
            )
            assert changed == "UPDATE 0", table
        for table in ("ratings", "api_keys"):
            deleted = await tenant.execute(
                f"DELETE FROM {table} WHERE tenant_id = $1",
                TENANT_B,
            )
            assert deleted == "DELETE 0", table
        for table in TENANT_TABLES:
            rows = await sync.fetch(
                f"SELECT created_at FROM {table} WHERE tenant_id = $1",
                TENANT_B,
            )
            assert [r["created_at"] for r in rows] == [1], table

    async def test_a_tenant_cannot_write_rows_of_another(
        self, tenants: dict[str, Connection]
    ) -> None:
        """Inserting a row for B, or moving one of A's rows to B, is refused by the policy."""
        tenant = tenants["tenant"]
        with pytest.raises(SyncError, match="row-level security"), translated():
            await insert_rating(tenant, TENANT_B, "u2", "book")
        with pytest.raises(SyncError, match="row-level security"), translated():
            await tenant.execute("UPDATE ratings SET tenant_id = $1", TENANT_B)

    async def test_without_a_tenant_setting_nothing_is_visible(
        self, tenants: dict[str, Connection]
    ) -> None:
        """Unset, or empty once a SET LOCAL has ended, the setting matches no row (no error)."""
        tenant = tenants["tenant"]
        await tenant.execute("RESET edge_node.tenant_id")
        assert await tenant.fetchval("SELECT count(*) FROM ratings") == 0
        async with tenant.transaction():
            await tenant.execute("SET LOCAL edge_node.tenant_id = $$" + TENANT_B + "$$")
            assert await tenant.fetchval("SELECT count(*) FROM ratings") == 1
        assert await tenant.fetchval("SHOW edge_node.tenant_id") == ""
        assert await tenant.fetchval("SELECT count(*) FROM ratings") == 0

    async def test_the_sync_role_sees_every_tenant(self, tenants: dict[str, Connection]) -> None:
        """The sync role (table owner, RLS forced, no BYPASSRLS, no tenant set) reads and
        writes every tenant's rows through its exempting policy."""
        sync = tenants["sync"]
        attributes = await sync.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(attributes) == (False, False)
        for table in TENANT_TABLES:
            rows = await sync.fetch(f"SELECT tenant_id::text FROM {table}")
            assert sorted(r["tenant_id"] for r in rows) == sorted([TENANT_A, TENANT_B]), table
        assert await sync.execute("UPDATE ratings SET score = 2") == "UPDATE 2"


class TestMigrateCommand:
    def test_migrate_prints_what_it_applied(self, postgres_dsn: str) -> None:
        """`central migrate --dsn` prints one JSON report per database; run again, it applies
        nothing."""
        first = run_cli("central", "migrate", "--dsn", postgres_dsn)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == [
            {"dsn": postgres_dsn, "applied": ALL_VERSIONS, "version": ALL_VERSIONS[-1]}
        ]
        again = json.loads(run_cli("central", "migrate", "--dsn", postgres_dsn).stdout)
        assert again[0]["applied"] == []

    def test_every_configured_shard_is_migrated(self, postgres_dsns: tuple[str, str]) -> None:
        """Without --dsn, every DSN of central.dsns (here from the environment) is migrated."""
        done = run_cli(
            "central", "migrate", env={"EDGE_NODE_CENTRAL_DSNS": json.dumps(postgres_dsns)}
        )
        assert done.returncode == 0, done.stderr
        reports = json.loads(done.stdout)
        assert [(r["dsn"], r["applied"]) for r in reports] == [
            (dsn, ALL_VERSIONS) for dsn in postgres_dsns
        ]

    def test_no_dsn_is_a_configuration_error(self) -> None:
        """With neither --dsn nor central.dsns the command exits 78 and says what to set."""
        done = run_cli("central", "migrate")
        assert done.returncode == EXIT_CONFIG
        assert "central.dsns" in done.stderr

    def test_unreachable_server_exits_69_without_showing_the_password(self) -> None:
        """A server that refuses connections is EX_UNAVAILABLE (retry later); the DSN's
        password never appears in the message."""
        dsn = f"postgresql://edge:s3cret-pw@127.0.0.1:{free_port()}/edge"
        done = run_cli("central", "migrate", "--dsn", dsn)
        assert done.returncode == 69
        assert "127.0.0.1" in done.stderr
        assert "s3cret-pw" not in done.stderr + done.stdout


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*edge_node_command(), *args],
        capture_output=True,
        text=True,
        env=clean_environment(**(env or {})),
        timeout=60,
        check=False,
    )


async def insert_tenant_with_key(conn: Connection, tenant_id: str, key_id: str) -> None:
    """A tenant row and one admin key row (a dummy hash), written as the sync role."""
    await conn.execute(
        "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
        " VALUES ($1, 'acme', 'payg', 1, 1)",
        tenant_id,
    )
    await conn.execute(
        "INSERT INTO api_keys (tenant_id, key_id, key_hash, role, created_at)"
        " VALUES ($1, $2, $3, 'admin', 1)",
        tenant_id,
        key_id,
        "0" * 64,
    )


async def insert_rating(
    conn: Connection,
    tenant_id: str,
    user_id: str,
    item_id: str,
    *,
    score: int = 5,
    change_xid: str = "0",
) -> None:
    await conn.execute(
        "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at, updated_at,"
        " origin_node, change_xid) VALUES ($1, $2, $3, $4, $5, 1, 1, 'node-a', $6::text::xid8)",
        tenant_id,
        uuid.uuid4(),
        user_id,
        item_id,
        score,
        change_xid,
    )


async def read_changes(conn: Connection, tenant_id: str, *, since: str) -> tuple[list[str], str]:
    """The download rule: one snapshot, rows at or above the checkpoint and below the horizon
    (the oldest running transaction); returns them and the next checkpoint."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        rows = await conn.fetch(
            "SELECT user_id FROM ratings WHERE tenant_id = $1"
            " AND change_xid >= $2::text::xid8 AND change_xid < $3::text::xid8"
            " ORDER BY change_xid, id",
            tenant_id,
            since,
            horizon,
        )
    return [r["user_id"] for r in rows], horizon


async def wait_for_lock_waiters(conn: Connection, count: int) -> None:
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited on the migration lock")


def create_roles(server: PostgresServer) -> None:
    """The sync role and a tenant role: plain logins, neither superuser nor BYPASSRLS."""
    for role in (SYNC_ROLE, TENANT_ROLE):
        server.sql(
            "DO $$ BEGIN"
            f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            f" THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
        )
