"""Schema migrations of one SQLite file opened by several processes at the same moment."""

from __future__ import annotations

import threading
from pathlib import Path

from edge_node import sqlite
from edge_node.node_database import MIGRATIONS


class TestConcurrentMigration:
    def test_connections_migrating_one_new_file_at_once_apply_each_migration_once(
        self, tmp_path: Path
    ) -> None:
        """Eight connections (as the workers of `serve --workers N` starting together) migrate
        a fresh node.sqlite at the same moment: none fails, and the schema is complete."""
        path = tmp_path / "node.sqlite"
        start, errors = threading.Barrier(8), []

        def open_and_migrate() -> None:
            conn = sqlite.connect(path, synchronous="full")
            try:
                start.wait()
                sqlite.migrate(conn, MIGRATIONS)
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=open_and_migrate) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        conn = sqlite.connect(path)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        finally:
            conn.close()
        assert version == len(MIGRATIONS)
