"""Tenant isolation in the central PostgreSQL, attacked: a non-owner role scoped to tenant A
sends every shape of SQL it may and never reads, changes, adds or removes a row of tenant B."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from edge_node.errors import SyncError
from sync.central.roles import bind_role
from sync.central.schema import migrate
from sync.postgres import Connection, connect, translated
from tests.postgres import PostgresServer
from tests.sync.central.test_schema import (
    SYNC_ROLE,
    TENANT_ROLE,
    create_roles,
    insert_tenant_with_key,
)

TABLES = ("tenants", "api_keys", "ratings")
RLS_TABLES = (
    *TABLES,
    "tenant_data_keys",
    "tenant_deletions",
    "billing_events",
    "quota_periods",
    "quota_leases",
)
B_SECRET = "b-private-comment"
B_ROLE = "edge_tenant_b_test"  # bound to B
APP_ROLE = "edge_app_test"  # a trusted application role, scoped by the setting
UNBOUND_ROLE = "edge_unbound_test"  # granted the tables, bound to nothing
EXTRA_ROLES = (B_ROLE, APP_ROLE, UNBOUND_ROLE)


@dataclass
class Sessions:
    sync: Connection  # the owner (sync role): sees everything, to check B is intact
    tenant: Connection  # a plain role, granted DML on every table, bound to A
    admin: Connection  # the superuser, for what only it may do: role memberships
    a: str
    b: str

    async def b_rows(self) -> list[tuple[object, ...]]:
        """Every row of B in every table, as the owner sees them."""
        rows: list[tuple[object, ...]] = []
        for table in TABLES:
            found = await self.sync.fetch(
                f"SELECT * FROM {table} WHERE tenant_id = $1 ORDER BY 1, 2", self.b
            )
            rows.extend((table, *row.values()) for row in found)
        return rows

    async def sees(self, sql: str, *args: object) -> list[str]:
        """The tenant ids in what `sql` returns to the scoped session."""
        return [str(row[0]) for row in await self.tenant.fetch(sql, *args)]

    async def seen_tenants(self) -> set[str]:
        """Every tenant id the scoped session reads from every table under row-level security."""
        seen: set[str] = set()
        for table in RLS_TABLES:
            seen.update(await self.sees(f"SELECT tenant_id FROM {table}"))
        return seen

    async def refused(self, sql: str, *args: object) -> str:
        """Run `sql` as the scoped session, expecting PostgreSQL to refuse it; the message."""
        with pytest.raises(SyncError) as caught, translated():
            await self.tenant.execute(sql, *args)
        return str(caught.value)


@pytest.fixture
async def sessions(postgres_server: PostgresServer, postgres_dsn: str) -> AsyncIterator[Sessions]:
    """Schema migrated by the non-superuser sync role; tenants A and B with a key, a rating,
    a data key and a billing event each, and a deleted tenant; a plain login granted SELECT,
    INSERT, UPDATE, DELETE on every table (as an operator would) and bound to A in
    tenant_roles, with no edge_node.tenant_id set; another such login bound to B."""
    create_roles(postgres_server)
    create_extra_roles(postgres_server)
    database = postgres_dsn.rsplit("/", 1)[1]
    postgres_server.sql(f'ALTER DATABASE "{database}" OWNER TO {SYNC_ROLE}')
    sync = await connect(postgres_server.dsn(database, user=SYNC_ROLE))
    tenant = await connect(postgres_server.dsn(database, user=TENANT_ROLE))
    admin = await connect(postgres_dsn)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await migrate(sync)
        for tenant_id, key_id, comment in ((a, "a" * 16, "a says"), (b, "b" * 16, B_SECRET)):
            await seed_tenant(sync, tenant_id, key_id, comment)
        await sync.execute(
            "INSERT INTO tenant_deletions (tenant_id, deleted_at) VALUES ($1, 1)", str(uuid.uuid4())
        )
        for role in (TENANT_ROLE, *EXTRA_ROLES):
            await sync.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(RLS_TABLES)} TO {role};"
                f" GRANT SELECT ON item_scores TO {role}"
            )
        await bind_role(sync, TENANT_ROLE, a)
        await bind_role(sync, B_ROLE, b)
        assert (
            await tenant.fetchval(
                "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            )
            is False
        )
        yield Sessions(sync, tenant, admin, a, b)
    finally:
        for connection in (sync, tenant, admin):
            await connection.close()


async def seed_tenant(sync: Connection, tenant_id: str, key_id: str, comment: str) -> None:
    """A tenant with an API key, a rating, a data key and a billing event, as the sync role."""
    await insert_tenant_with_key(sync, tenant_id, key_id)
    await sync.execute(
        "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, comment,"
        " created_at, updated_at, origin_node) VALUES ($1, $2, 'u1', 'book', 4, $3,"
        " 1, 1, 'n1')",
        tenant_id,
        str(uuid.uuid5(uuid.UUID(tenant_id), "u1/book")),
        comment,
    )
    await sync.execute(
        "INSERT INTO tenant_data_keys (tenant_id, key_id, wrapped, fleet_key_id, created_at)"
        " VALUES ($1, $2, $3, $2, 1)",
        tenant_id,
        key_id,
        bytes(40),
    )
    await sync.execute(
        "INSERT INTO billing_events (tenant_id, event_id, type, created, target, origin_node)"
        " VALUES ($1, $2, 'invoice.paid', 1, 'active', 'n1')",
        tenant_id,
        f"evt_{key_id}",
    )


def create_extra_roles(server: PostgresServer) -> None:
    """Plain logins besides the bound one: B's bound role, a trusted application role and a
    role bound to nothing."""
    for role in EXTRA_ROLES:
        server.sql(
            "DO $$ BEGIN"
            f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            f" THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
        )


class TestReads:
    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT tenant_id FROM {table}",
            "SELECT tenant_id FROM {table} WHERE tenant_id = $1",
            "SELECT tenant_id FROM {table} WHERE tenant_id = $1 OR true",
            "SELECT t.tenant_id FROM {table} t JOIN {table} u ON u.tenant_id <> t.tenant_id"
            " OR u.tenant_id = $1",
            "WITH x AS (SELECT * FROM {table}) SELECT tenant_id FROM x WHERE tenant_id = $1"
            " UNION ALL SELECT tenant_id FROM {table}",
            "SELECT tenant_id FROM {table} WHERE tenant_id IN (SELECT $1::uuid)",
            "SELECT tenant_id FROM ONLY {table} WHERE tenant_id::text LIKE '%'",
        ],
        ids=["all", "where-b", "or-true", "self-join", "cte-union", "in-subquery", "like"],
    )
    async def test_no_select_shape_returns_b(self, sessions: Sessions, sql: str) -> None:
        """Filters, joins, CTEs and subqueries naming B return only A's rows, in every table."""
        for table in TABLES:
            query = sql.format(table=table)
            args = (sessions.b,) if "$1" in query else ()
            assert set(await sessions.sees(query, *args)) <= {sessions.a}, query

    async def test_counts_and_the_score_view_show_only_a(self, sessions: Sessions) -> None:
        """Aggregates over ratings and the item_scores view count A's rating alone."""
        assert await sessions.tenant.fetchval("SELECT count(*) FROM ratings") == 1
        assert await sessions.sees("SELECT tenant_id FROM item_scores") == [sessions.a]

    async def test_a_leaky_function_never_sees_b(self, sessions: Sessions) -> None:
        """A function of the session's own that raises with any value it is shown, used in a
        WHERE clause, runs after the policy: it is never shown B's comment."""
        await sessions.tenant.execute(
            "CREATE FUNCTION pg_temp.leak(t uuid, c text) RETURNS boolean"
            " LANGUAGE plpgsql COST 0.0001 AS $$ BEGIN"
            f" IF t <> '{sessions.a}' THEN RAISE EXCEPTION 'leaked %', c; END IF;"
            " RETURN true; END $$"
        )
        rows = await sessions.tenant.fetch(
            "SELECT comment FROM ratings WHERE pg_temp.leak(tenant_id, comment)"
        )
        assert [r["comment"] for r in rows] == ["a says"]

    async def test_copy_out_shows_only_a(self, sessions: Sessions) -> None:
        """COPY (SELECT ...) TO STDOUT and COPY of the table itself are filtered too."""
        chunks: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            chunks.append(chunk)

        await sessions.tenant.copy_from_query("SELECT * FROM ratings", output=sink)
        assert B_SECRET.encode() not in b"".join(chunks)
        assert b"a says" in b"".join(chunks)
        chunks.clear()
        await sessions.tenant.copy_from_table("ratings", output=sink)
        assert B_SECRET.encode() not in b"".join(chunks)
        assert b"a says" in b"".join(chunks)


class TestWrites:
    async def test_updates_aimed_at_b_change_nothing(self, sessions: Sessions) -> None:
        """UPDATE by B's id, by a join, and of every row with RETURNING touch only A's rows."""
        before = await sessions.b_rows()
        for table in TABLES:
            assert (
                await sessions.tenant.execute(
                    f"UPDATE {table} SET created_at = 99 WHERE tenant_id = $1", sessions.b
                )
                == "UPDATE 0"
            )
            returned = await sessions.sees(
                f"UPDATE {table} SET updated_at = 98"
                if table != "api_keys"
                else f"UPDATE {table} SET created_at = 98 RETURNING tenant_id"
            )
            assert set(returned) <= {sessions.a}
        assert (
            await sessions.tenant.execute(
                "UPDATE ratings r SET score = 1 FROM tenants t WHERE t.tenant_id = $1"
                " AND r.tenant_id = t.tenant_id",
                sessions.b,
            )
            == "UPDATE 0"
        )
        assert await sessions.b_rows() == before

    @pytest.mark.parametrize("table", TABLES)
    async def test_moving_a_row_to_b_is_refused(self, sessions: Sessions, table: str) -> None:
        """Changing tenant_id of A's own row to B is refused and changes nothing: by the
        policy, or for an API key first by the registry rule that a key never moves (0003)."""
        message = await sessions.refused(f"UPDATE {table} SET tenant_id = $1", sessions.b)
        expected = "cannot move to another tenant" if table == "api_keys" else "row-level"
        assert expected in message
        assert len(await sessions.b_rows()) == 3

    async def test_inserting_for_b_is_refused(self, sessions: Sessions) -> None:
        """INSERT of a tenant, key or rating for B, plain or as an upsert onto B's row, is
        refused; the refusal is the same whether or not the target tenant exists."""
        before = await sessions.b_rows()
        b_rating = str(uuid.uuid5(uuid.UUID(sessions.b), "u1/book"))
        statements = [
            (
                "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
                " VALUES ($1, 'x', 'payg', 1, 1)",
                (sessions.b,),
            ),
            (
                "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
                " updated_at, origin_node) VALUES ($1, $2, 'u1', 'book', 1, 2, 2, 'n')"
                " ON CONFLICT (tenant_id, id) DO UPDATE SET comment = 'owned'",
                (sessions.b, b_rating),
            ),
        ]
        for target in (sessions.b, str(uuid.uuid4())):
            statements.append(
                (
                    "INSERT INTO api_keys (tenant_id, key_id, key_hash, role, created_at)"
                    " VALUES ($1, 'cccccccccccccccc', $2, 'admin', 1)",
                    (target, "1" * 64),
                )
            )
        messages = [await sessions.refused(sql, *args) for sql, args in statements]
        assert all("row-level security" in m for m in messages), messages
        assert messages[-1] == messages[-2], "no oracle for whether a tenant exists"
        assert await sessions.b_rows() == before

    async def test_copy_in_is_refused(self, sessions: Sessions) -> None:
        """COPY FROM, which row-level security cannot filter row by row, is refused outright,
        even for rows of the session's own tenant."""
        for tenant_id in (sessions.b, sessions.a):
            with pytest.raises(Exception, match="row-level security"):
                await sessions.tenant.copy_records_to_table(
                    "ratings", records=[(tenant_id, uuid.uuid4())], columns=["tenant_id", "id"]
                )
        assert len(await sessions.b_rows()) == 3

    async def test_insert_select_cannot_copy_b_into_a(self, sessions: Sessions) -> None:
        """INSERT ... SELECT reading B's rows finds none to copy."""
        result = await sessions.tenant.execute(
            "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, comment, created_at,"
            " updated_at, origin_node) SELECT $1, gen_random_uuid(), user_id || '-copy', item_id,"
            " score, comment, 1, 1, 'n' FROM ratings WHERE tenant_id = $2",
            sessions.a,
            sessions.b,
        )
        assert result == "INSERT 0 0"

    async def test_deletes_aimed_at_b_remove_nothing(self, sessions: Sessions) -> None:
        """DELETE by B's id, with USING, and of everything leave B's rows; TRUNCATE, which
        row-level security would not filter, is not granted."""
        before = await sessions.b_rows()
        for table in ("ratings", "api_keys"):
            assert (
                await sessions.tenant.execute(
                    f"DELETE FROM {table} WHERE tenant_id = $1", sessions.b
                )
                == "DELETE 0"
            )
        assert (
            await sessions.tenant.execute(
                "DELETE FROM ratings r USING tenants t WHERE t.tenant_id = r.tenant_id"
                " AND t.tenant_id = $1",
                sessions.b,
            )
            == "DELETE 0"
        )
        assert await sessions.tenant.execute("DELETE FROM ratings") == "DELETE 1"
        assert "permission denied" in await sessions.refused("TRUNCATE ratings")
        assert await sessions.b_rows() == before


@contextlib.asynccontextmanager
async def member_of(sessions: Sessions, role: str) -> AsyncIterator[None]:
    """The bound login made a member of `role` (as an operator might by mistake), for a while:
    memberships outlive the test's database."""
    await sessions.admin.execute(f"GRANT {role} TO {TENANT_ROLE}")
    try:
        yield
    finally:
        await sessions.admin.execute(f"REVOKE {role} FROM {TENANT_ROLE}")


class TestTheBindingDecides:
    @pytest.mark.parametrize(
        "statement",
        [
            "SET edge_node.tenant_id = '{b}'",
            "SELECT set_config('edge_node.tenant_id', '{b}', false)",
            "RESET edge_node.tenant_id",
            "SET edge_node.tenant_id = ''",
            "SET edge_node.tenant_id TO DEFAULT",
            "RESET ALL",
            "DISCARD ALL",
            "SET edge_node.tenant_id = '%'",
        ],
        ids=["set-b", "set-config-b", "reset", "empty", "default", "reset-all", "discard", "junk"],
    )
    async def test_no_setting_moves_a_bound_role(self, sessions: Sessions, statement: str) -> None:
        """Whatever the bound session sets, resets or discards, it reads exactly A's rows in
        every table and still cannot change or add B's."""
        await sessions.tenant.execute(statement.format(b=sessions.b))
        assert await sessions.seen_tenants() == {sessions.a}
        assert await sessions.tenant.fetchval("SELECT count(*) FROM ratings") == 1
        for table in TABLES:
            assert (
                await sessions.tenant.execute(
                    f"UPDATE {table} SET created_at = 7 WHERE tenant_id = $1", sessions.b
                )
                == "UPDATE 0"
            )
        message = await sessions.refused(
            "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
            " updated_at, origin_node) VALUES ($1, gen_random_uuid(), 'u9', 'x', 1, 1, 1, 'n')",
            sessions.b,
        )
        assert "row-level security" in message

    async def test_a_transaction_scoped_setting_moves_nothing(self, sessions: Sessions) -> None:
        """SET LOCAL and set_config(..., true) naming B, inside a transaction, show only A."""
        async with sessions.tenant.transaction():
            await sessions.tenant.execute(f"SET LOCAL edge_node.tenant_id = '{sessions.b}'")
            assert await sessions.seen_tenants() == {sessions.a}
        async with sessions.tenant.transaction():
            await sessions.tenant.execute(
                "SELECT set_config('edge_node.tenant_id', $1, true)", sessions.b
            )
            assert await sessions.seen_tenants() == {sessions.a}

    async def test_set_role_to_another_tenants_role_shows_nothing(self, sessions: Sessions) -> None:
        """A login bound to A that may SET ROLE to B's bound role sees no row as that role
        and may write none for B; RESET ROLE brings back A's rows."""
        async with member_of(sessions, B_ROLE):
            await sessions.tenant.execute(f"SET ROLE {B_ROLE}")
            assert await sessions.seen_tenants() == set()
            assert "row-level security" in await sessions.refused(
                "INSERT INTO ratings (tenant_id, id, user_id, item_id, score, created_at,"
                " updated_at, origin_node) VALUES ($1, gen_random_uuid(), 'u9', 'x', 1, 1, 1,"
                " 'n')",
                sessions.b,
            )
            assert await sessions.tenant.execute("DELETE FROM ratings") == "DELETE 0"
            await sessions.tenant.execute("RESET ROLE")
            assert await sessions.seen_tenants() == {sessions.a}
        assert len(await sessions.b_rows()) == 3

    async def test_set_role_to_a_trusted_role_keeps_the_logins_tenant(
        self, sessions: Sessions
    ) -> None:
        """As a trusted application role the bound login may scope itself to its own tenant
        only: the setting naming B shows nothing."""
        await bind_role(sessions.sync, APP_ROLE, None)
        async with member_of(sessions, APP_ROLE):
            await sessions.tenant.execute(f"SET ROLE {APP_ROLE}")
            await sessions.tenant.execute(f"SET edge_node.tenant_id = '{sessions.b}'")
            assert await sessions.seen_tenants() == set()
            await sessions.tenant.execute(f"SET edge_node.tenant_id = '{sessions.a}'")
            assert await sessions.seen_tenants() == {sessions.a}

    async def test_a_definer_function_of_b_shows_the_caller_nothing(
        self, sessions: Sessions
    ) -> None:
        """A SECURITY DEFINER function owned by B's role, callable by A, runs as B but shows
        A's session none of B's rows: the login's binding still decides."""
        await sessions.admin.execute(
            "CREATE FUNCTION b_comments() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER"
            " AS 'SELECT comment FROM ratings';"
            f" ALTER FUNCTION b_comments() OWNER TO {B_ROLE};"
            f" GRANT EXECUTE ON FUNCTION b_comments() TO {TENANT_ROLE}"
        )
        assert await sessions.tenant.fetch("SELECT * FROM b_comments()") == []

    async def test_a_temporary_binding_table_is_not_read(self, sessions: Sessions) -> None:
        """A temporary table named tenant_roles binding the session to B is never consulted."""
        await sessions.tenant.execute(
            "CREATE TEMP TABLE tenant_roles (role regrole, tenant_id uuid,"
            " scoped_by_setting boolean, bound_at timestamptz);"
            f" INSERT INTO tenant_roles VALUES ('{TENANT_ROLE}', '{sessions.b}', false, now())"
        )
        assert await sessions.seen_tenants() == {sessions.a}

    async def test_bindings_are_read_only_and_private(self, sessions: Sessions) -> None:
        """The bound role reads its own binding and nobody else's, and cannot add, change or
        remove a binding."""
        rows = await sessions.tenant.fetch("SELECT role::text, tenant_id::text FROM tenant_roles")
        assert [tuple(r) for r in rows] == [(TENANT_ROLE, sessions.a)]
        for sql in (
            f"INSERT INTO tenant_roles (role, tenant_id) VALUES ('{UNBOUND_ROLE}', '{sessions.b}')",
            f"UPDATE tenant_roles SET tenant_id = '{sessions.b}'",
            "DELETE FROM tenant_roles",
        ):
            assert "permission denied" in await sessions.refused(sql)


class TestRolesWithoutABinding:
    async def test_an_unbound_role_sees_nothing_whatever_it_sets(
        self, postgres_server: PostgresServer, sessions: Sessions
    ) -> None:
        """A role granted every table but bound to nothing reads no row, with the setting
        naming A, B or nothing."""
        database = await sessions.sync.fetchval("SELECT current_database()")
        unbound = await connect(postgres_server.dsn(database, user=UNBOUND_ROLE))
        try:
            for value in ("", sessions.a, sessions.b):
                await unbound.execute(f"SET edge_node.tenant_id = '{value}'")
                for table in RLS_TABLES:
                    assert await unbound.fetch(f"SELECT tenant_id FROM {table}") == [], table
        finally:
            await unbound.close()

    async def test_a_trusted_role_is_scoped_by_its_setting(
        self, postgres_server: PostgresServer, sessions: Sessions
    ) -> None:
        """A role marked scoped-by-setting sees the tenant its setting names, nothing when it
        is unset, and an error (never a wildcard) when it is not a UUID."""
        await bind_role(sessions.sync, APP_ROLE, None)
        database = await sessions.sync.fetchval("SELECT current_database()")
        app = await connect(postgres_server.dsn(database, user=APP_ROLE))
        try:
            assert await app.fetch("SELECT tenant_id FROM ratings") == []
            for tenant_id in (sessions.a, sessions.b):
                await app.execute(f"SET edge_node.tenant_id = '{tenant_id}'")
                rows = await app.fetch("SELECT tenant_id::text FROM ratings")
                assert [r[0] for r in rows] == [tenant_id]
            await app.execute("SET edge_node.tenant_id = '%'")
            with pytest.raises(SyncError, match="uuid"), translated():
                await app.fetch("SELECT * FROM ratings")
        finally:
            await app.close()


async def test_every_tenant_policy_decides_by_the_binding(sessions: Sessions) -> None:
    """Every table under row-level security has the tenant policy, which calls the binding
    function, and no policy anywhere reads the setting directly."""
    protected = await sessions.sync.fetch(
        "SELECT relname::text FROM pg_class WHERE relrowsecurity"
        " AND relnamespace = current_schema()::regnamespace AND relname <> 'tenant_roles'"
    )
    assert sorted(r[0] for r in protected) == sorted(RLS_TABLES)
    policies = await sessions.sync.fetch(
        "SELECT tablename::text, policyname::text, coalesce(qual, '') AS qual,"
        " coalesce(with_check, '') AS with_check FROM pg_policies"
    )
    isolation = {p["tablename"]: p for p in policies if p["policyname"] == "tenant_isolation"}
    assert sorted(isolation) == sorted(RLS_TABLES)
    for policy in isolation.values():
        assert "edge_node_session_tenant()" in policy["qual"], policy["tablename"]
        assert "edge_node_session_tenant()" in policy["with_check"], policy["tablename"]
    reading_the_setting = [
        p["tablename"] for p in policies if "current_setting" in p["qual"] + p["with_check"]
    ]
    assert reading_the_setting == []
