"""node.sqlite: each component migrates its own tables, at once from many processes, and files
from before component versions are adopted without losing a row."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_node import node_database, sqlite
from edge_node.abuse import blocks
from edge_node.abuse.blocks import BlockStore
from edge_node.node_database import open_node_database, read_value, values_named, write_value
from edge_node.tenants import schema as tenants_schema
from edge_node.tenants.registry import TenantRegistry
from sync.billing import ledger
from sync.billing.ledger import BillingLedger

COMPONENTS: dict[str, Sequence[str]] = {
    node_database.COMPONENT: node_database.MIGRATIONS,
    tenants_schema.COMPONENT: tenants_schema.MIGRATIONS,
    ledger.COMPONENT: ledger.MIGRATIONS,
    blocks.COMPONENT: blocks.MIGRATIONS,
}
# The single sequence node.sqlite had before components: (component, migration index) pairs
# per user_version, in the order that release applied them.
BEFORE_COMPONENTS = (
    (("tenants", 0), ("node", 0)),
    (("tenants", 1), ("node", 1)),
    (("billing", 0), ("tenants", 2)),
    (("tenants", 3),),
    (("billing", 1), ("tenants", 4)),
    (("abuse", 0),),
)


def open_every_component(data_dir: Path) -> sqlite3.Connection:
    """node.sqlite opened as the daemon and the sync worker open it, every component migrated."""
    conn = open_node_database(data_dir)
    TenantRegistry(conn)
    BlockStore(conn)
    BillingLedger(conn)
    return conn


def versions(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: sqlite.schema_version(conn, name) for name in COMPONENTS}


def write_old_file(path: Path, user_version: int) -> None:
    """A node.sqlite as the release before components left it at `user_version`."""
    conn = sqlite.connect(path, synchronous="full")
    for version, steps in enumerate(BEFORE_COMPONENTS[:user_version], start=1):
        conn.executescript("".join(COMPONENTS[c][i] for c, i in steps))
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


class TestComponents:
    def test_a_new_file_gets_every_component_at_its_newest_version(self, tmp_path: Path) -> None:
        """Opened by every component, a fresh node.sqlite holds each at its newest version."""
        conn = open_every_component(tmp_path)
        assert versions(conn) == {name: len(steps) for name, steps in COMPONENTS.items()}
        assert sqlite.schema_version(conn) == 0  # the old single sequence is not used

    def test_a_component_migrates_only_when_it_is_used(self, tmp_path: Path) -> None:
        """A standalone node that never bills has no ledger table: it is the ledger's."""
        conn = open_node_database(tmp_path)
        TenantRegistry(conn)
        assert versions(conn)["billing"] == 0
        assert (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'billing_ledger'").fetchone()
            is None
        )

    def test_connections_migrating_one_new_file_at_once_apply_each_migration_once(
        self, tmp_path: Path
    ) -> None:
        """Eight connections (as the workers of `serve --workers N` starting together) migrate
        a fresh node.sqlite at the same moment: none fails, and the schema is complete."""
        start, errors = threading.Barrier(8), []

        def open_and_migrate() -> None:
            try:
                start.wait()
                open_every_component(tmp_path).close()
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(exc)

        threads = [threading.Thread(target=open_and_migrate) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        conn = open_node_database(tmp_path)
        assert versions(conn) == {name: len(steps) for name, steps in COMPONENTS.items()}


class TestFilesFromBeforeComponents:
    @pytest.mark.parametrize("user_version", [1, 2, 3, 4, 5, 6])
    def test_an_old_file_is_adopted_at_the_versions_its_sequence_implied(
        self, tmp_path: Path, user_version: int
    ) -> None:
        """A file the old sequence left at any version opens, each component is recorded at
        what that version had applied, and the rest migrates without an error."""
        write_old_file(tmp_path / "node.sqlite", user_version)
        conn = open_node_database(tmp_path)
        applied = [c for steps in BEFORE_COMPONENTS[:user_version] for c, _ in steps]
        expected = {name: applied.count(name) for name in COMPONENTS}
        expected["node"] = len(node_database.MIGRATIONS)  # the file's own part: opening migrates it
        assert versions(conn) == expected
        conn.close()
        conn = open_every_component(tmp_path)
        assert versions(conn) == {name: len(steps) for name, steps in COMPONENTS.items()}

    def test_an_adopted_file_keeps_its_rows_and_its_old_version_number(
        self, tmp_path: Path
    ) -> None:
        """Rows written before stay, and user_version stays 6, so the release before can
        still open the file (it sees every one of its migrations applied)."""
        write_old_file(tmp_path / "node.sqlite", 6)
        old = sqlite.connect(tmp_path / "node.sqlite")
        old.execute(
            "INSERT INTO tenants (tenant_id, name, plan, created_at, updated_at)"
            " VALUES ('t1', 'acme', 'payg', 1, 1)"
        )
        old.execute(
            "INSERT INTO sync_state (name, value) VALUES ('billing.planned_through.q', '7')"
        )
        old.close()
        conn = open_every_component(tmp_path)
        assert [t.name for t in TenantRegistry(conn).list_tenants()] == ["acme"]
        assert read_value(conn, "billing.planned_through.q") == "7"
        assert sqlite.schema_version(conn) == 6


class TestNamedValues:
    def test_values_are_set_replaced_and_listed_by_exact_prefix(self, tmp_path: Path) -> None:
        """A prefix matches literally: `_` in it is not a wildcard."""
        conn = open_node_database(tmp_path)
        write_value(conn, "billing.planned_through.q1", "1")
        write_value(conn, "billing.planned_through.q1", "2")
        write_value(conn, "billing.plannedXthrough.q2", "3")
        assert values_named(conn, "billing.planned_through.") == [
            ("billing.planned_through.q1", "2")
        ]
