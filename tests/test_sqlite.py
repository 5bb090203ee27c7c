"""Opening and migrating edge-node's SQLite files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_node import sqlite
from edge_node.errors import SchemaTooNew

MIGRATIONS = (
    "CREATE TABLE ratings (id TEXT PRIMARY KEY);",
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY);",
)


class TestConcurrentMigration:
    def test_a_migration_applied_by_another_process_while_waiting_is_not_applied_again(
        self, tmp_path: Path
    ) -> None:
        """Two connections migrating the same new file at once (the daemon and a CLI
        command) both succeed: the one that waited for the write lock sees the schema the
        other applied instead of failing on "table already exists"."""
        path = tmp_path / "node.sqlite"
        first, second = sqlite.connect(path), sqlite.connect(path)
        first.execute("BEGIN IMMEDIATE")  # holds the write lock while `second` starts
        errors: list[BaseException] = []

        def migrate_second() -> None:
            try:
                sqlite.migrate(second, MIGRATIONS)
            except BaseException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=migrate_second)
        waiter.start()
        time.sleep(0.3)  # `second` has read user_version 0 and waits for the lock
        for version, script in enumerate(MIGRATIONS, start=1):
            first.execute(script)
            first.execute(f"PRAGMA user_version = {version}")
        first.execute("COMMIT")
        waiter.join(timeout=10)
        assert errors == []
        assert second.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        tables = {row[0] for row in second.execute("SELECT name FROM sqlite_master")}
        assert {"ratings", "outbox"} <= tables
        first.close()
        second.close()


ONE = ("CREATE TABLE one (a INTEGER);",)
TWO = (*ONE, "ALTER TABLE one ADD COLUMN b INTEGER;")


class TestReaderFloor:
    def test_an_older_release_reads_a_file_migrated_further_without_a_floor(
        self, tmp_path: Path
    ) -> None:
        """Additive migrations: a release that knows one migration opens a file at two."""
        conn = sqlite.connect(tmp_path / "f.sqlite")
        sqlite.migrate(conn, TWO, component="c")
        assert sqlite.migrate(conn, ONE, component="c") == 1
        assert sqlite.schema_version(conn, "c") == 2
        conn.close()

    def test_a_release_below_the_recorded_floor_refuses_the_file(self, tmp_path: Path) -> None:
        """A newer release that states its files need at least two migrations records it;
        a release knowing one refuses the file with a message naming the file, the
        component and both versions, and changes nothing."""
        conn = sqlite.connect(tmp_path / "f.sqlite")
        sqlite.migrate(conn, TWO, component="c", min_reader=2)
        with pytest.raises(SchemaTooNew, match=r"f\.sqlite was migrated by a newer") as refused:
            sqlite.migrate(conn, ONE, component="c")
        assert "its c tables need a release that knows schema version 2" in str(refused.value)
        assert "this one knows 1" in str(refused.value)
        assert sqlite.migrate(conn, TWO, component="c") == 2
        conn.close()

    def test_a_whole_file_floor_applies_to_user_version_files(self, tmp_path: Path) -> None:
        """Files versioned by user_version carry their floor too."""
        conn = sqlite.connect(tmp_path / "f.sqlite")
        sqlite.migrate(conn, TWO, min_reader=2)
        with pytest.raises(SchemaTooNew):
            sqlite.migrate(conn, ONE)
        conn.close()


class TestBeginWithoutWaiting:
    def test_a_taken_write_lock_is_busy_at_once_and_the_busy_timeout_stays(
        self, tmp_path: Path
    ) -> None:
        """`transaction(wait=False)` asks for the write lock once: another connection holding
        it makes SQLITE_BUSY at once rather than after the busy timeout (10 s here), and the
        connection keeps its busy timeout for every other statement."""
        path = tmp_path / "file.sqlite"
        holder = sqlite.connect(path)
        conn = sqlite.connect(path, busy_timeout_ms=10_000)
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with (
            pytest.raises(sqlite3.OperationalError) as raised,
            sqlite.transaction(conn, wait=False),
        ):
            pass
        assert time.monotonic() - started < 5  # not the busy handler's 10 s
        assert sqlite.is_busy(raised.value)
        assert not conn.in_transaction
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        holder.execute("COMMIT")
        with sqlite.transaction(conn, wait=False):
            conn.execute("CREATE TABLE t (x)")
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
