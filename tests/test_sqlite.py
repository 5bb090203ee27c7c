"""Opening and migrating edge-node's SQLite files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge_node import sqlite

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
