"""Tenant isolation in the central PostgreSQL, attacked: a non-owner role scoped to tenant A
sends every shape of SQL it may and never reads, changes, adds or removes a row of tenant B."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from edge_node.errors import SyncError
from sync.central_schema import migrate
from sync.postgres import Connection, connect, translated
from tests.postgres import PostgresServer
from tests.sync.test_central_schema import (
    SYNC_ROLE,
    TENANT_ROLE,
    create_roles,
    insert_tenant_with_key,
)

TABLES = ("tenants", "api_keys", "ratings")
B_SECRET = "b-private-comment"


@dataclass
class Sessions:
    sync: Connection  # the owner (sync role): sees everything, to check B is intact
    tenant: Connection  # a plain role, granted DML on every table, scoped to A
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

    async def refused(self, sql: str, *args: object) -> str:
        """Run `sql` as the scoped session, expecting PostgreSQL to refuse it; the message."""
        with pytest.raises(SyncError) as caught, translated():
            await self.tenant.execute(sql, *args)
        return str(caught.value)


@pytest.fixture
async def sessions(postgres_server: PostgresServer, postgres_dsn: str) -> AsyncIterator[Sessions]:
    """Schema migrated by the non-superuser sync role; tenants A and B with a key and a
    rating each; a plain login granted SELECT, INSERT, UPDATE, DELETE (as an operator would)
    and scoped to A by `SET edge_node.tenant_id`."""
    create_roles(postgres_server)
    database = postgres_dsn.rsplit("/", 1)[1]
    postgres_server.sql(f'ALTER DATABASE "{database}" OWNER TO {SYNC_ROLE}')
    sync = await connect(postgres_server.dsn(database, user=SYNC_ROLE))
    tenant = await connect(postgres_server.dsn(database, user=TENANT_ROLE))
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await migrate(sync)
        for tenant_id, key_id, comment in ((a, "a" * 16, "a says"), (b, "b" * 16, B_SECRET)):
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
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, api_keys, ratings TO {TENANT_ROLE};"
            f" GRANT SELECT ON item_scores TO {TENANT_ROLE}"
        )
        assert (
            await tenant.fetchval(
                "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            )
            is False
        )
        await tenant.execute(f"SET edge_node.tenant_id = '{a}'")
        yield Sessions(sync, tenant, a, b)
    finally:
        await sync.close()
        await tenant.close()


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


class TestScopingSetting:
    @pytest.mark.parametrize(
        "statement",
        [
            "RESET edge_node.tenant_id",
            "SET edge_node.tenant_id = ''",
            "SET edge_node.tenant_id TO DEFAULT",
            "RESET ALL",
            "DISCARD ALL",
            "SELECT set_config('edge_node.tenant_id', '', false)",
        ],
    )
    async def test_clearing_the_setting_shows_nothing(
        self, sessions: Sessions, statement: str
    ) -> None:
        """However the session clears its scope, it then sees and changes no row at all."""
        await sessions.tenant.execute(statement)
        for table in TABLES:
            assert await sessions.sees(f"SELECT tenant_id FROM {table}") == [], table
            assert await sessions.tenant.execute(f"UPDATE {table} SET created_at = 5") == "UPDATE 0"

    async def test_a_setting_that_is_not_a_uuid_shows_nothing(self, sessions: Sessions) -> None:
        """A scope that is not a UUID is an error, never a wildcard."""
        await sessions.tenant.execute("SET edge_node.tenant_id = '%'")
        message = await sessions.refused("SELECT * FROM ratings")
        assert "uuid" in message
