"""The PostgreSQL adapter: DSN checks that never show a password, and real server and network
failures translated into transient (retry) or permanent (set aside) sync errors."""

from __future__ import annotations

import asyncio

import pytest

from edge_node.errors import ConfigError, PermanentSyncError, TransientSyncError
from sync.postgres import check_dsn, connect, create_pool, redact_dsn, translated
from tests.postgres import PostgresServer, free_port


class TestDsn:
    @pytest.mark.parametrize(
        ("dsn", "shown"),
        [
            ("postgresql://edge@db:5432/edge", "postgresql://edge@db:5432/edge"),
            ("postgresql://edge:pw@db:5432/edge", "postgresql://edge:***@db:5432/edge"),
            (
                "postgres://db/edge?password=pw&sslmode=require",
                "postgres://db/edge?password=***&sslmode=require",
            ),
            ("host=db password=pw", "(a DSN that is not a URL, not shown)"),
        ],
    )
    def test_redaction_hides_passwords(self, dsn: str, shown: str) -> None:
        """A DSN's password, in the user part or the query, is replaced before it is shown."""
        assert redact_dsn(dsn) == shown

    def test_only_postgresql_urls_are_accepted(self) -> None:
        """A DSN that is not a postgresql:// URL is a configuration error that hides it."""
        check_dsn("postgresql://db/edge")
        for wrong in ("mysql://root:pw@db/edge", "postgresql://root:pw@db:99999/edge"):
            with pytest.raises(ConfigError, match="postgresql://user@host") as raised:
                check_dsn(wrong)
            assert "pw" not in str(raised.value)


class TestErrorTranslation:
    @pytest.mark.parametrize(
        ("sqlstate", "expected"),
        [
            ("40001", TransientSyncError),  # serialization failure
            ("40P01", TransientSyncError),  # deadlock detected
            ("53300", TransientSyncError),  # too many connections
            ("57P03", TransientSyncError),  # cannot connect now (starting up)
            (
                "42501",
                TransientSyncError,
            ),  # insufficient privilege: an operator's fix, not the data
            ("23505", PermanentSyncError),  # unique violation
            ("23514", PermanentSyncError),  # check violation
            ("22003", PermanentSyncError),  # numeric value out of range
        ],
    )
    async def test_server_errors_by_sqlstate(
        self, postgres_dsn: str, sqlstate: str, expected: type[Exception]
    ) -> None:
        """An error the server reports is transient or permanent by its SQLSTATE class."""
        conn = await connect(postgres_dsn)
        try:
            with pytest.raises(expected, match=f"SQLSTATE {sqlstate}"), translated("upload"):
                await conn.execute(
                    f"DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{sqlstate}'; END $$"
                )
        finally:
            await conn.close()

    async def test_a_rejected_row_is_permanent(self, postgres_dsn: str) -> None:
        """A constraint the data breaks, and a value the driver cannot encode, are permanent."""
        conn = await connect(postgres_dsn)
        try:
            await conn.execute("CREATE TABLE t (score int CHECK (score BETWEEN 1 AND 5))")
            with pytest.raises(PermanentSyncError, match="23514"), translated():
                await conn.execute("INSERT INTO t VALUES (9)")
            with pytest.raises(PermanentSyncError, match="invalid input for query"), translated():
                await conn.execute("INSERT INTO t VALUES ($1)", "five")
        finally:
            await conn.close()

    async def test_refused_connection_is_transient(self) -> None:
        """Nothing listening on the port: transient, and the message names the server."""
        with pytest.raises(TransientSyncError, match="cannot connect to postgresql://e:\\*\\*\\*@"):
            await connect(f"postgresql://e:pw@127.0.0.1:{free_port()}/edge")

    async def test_a_connection_dropped_mid_query_is_transient(self, postgres_dsn: str) -> None:
        """The server ends the session while a query runs: transient."""
        victim, killer = await connect(postgres_dsn), await connect(postgres_dsn)
        try:
            pid = victim.get_server_pid()
            running = asyncio.create_task(victim.execute("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(TransientSyncError), translated():
                await running
        finally:
            victim.terminate()
            await killer.close()

    async def test_statement_timeout_is_transient(self, postgres_dsn: str) -> None:
        """A query cancelled by statement_timeout: transient."""
        conn = await connect(postgres_dsn)
        try:
            await conn.execute("SET statement_timeout = 50")
            with pytest.raises(TransientSyncError, match="57014"), translated():
                await conn.execute("SELECT pg_sleep(5)")
        finally:
            await conn.close()

    async def test_role_over_its_connection_limit_is_transient(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """Too many connections (here a role limited to none): transient."""
        postgres_server.sql(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edge_limited')"
            " THEN CREATE ROLE edge_limited LOGIN CONNECTION LIMIT 0; END IF; END $$"
        )
        database = postgres_dsn.rsplit("/", 1)[1]
        with pytest.raises(TransientSyncError, match="53300"):
            await create_pool(postgres_server.dsn(database, user="edge_limited"))


class TestDurableCommits:
    async def test_a_session_commits_durably_where_the_server_does_not(
        self, postgres_dsn: str
    ) -> None:
        """The test server runs with synchronous_commit = off, which acknowledges a COMMIT
        before it would survive a crash (the edge would then forget an upload the server
        loses): our sessions raise it back to on."""
        conn = await connect(postgres_dsn)
        try:
            server_default = await conn.fetchval(
                "SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit'"
            )
            assert server_default == "off"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
        finally:
            await conn.close()
