"""Every SQLite migration is additive, so the previous release reads a file the next one wrote.

During an upgrade the old workers keep serving on the files the new ones have migrated
(docs/operations.md, "Upgrade"): each migration may add tables, columns (nullable or with a
default, so the old release's INSERTs still work), indexes and triggers, but never drop or
rename a table or column, nor change a column's type, nullability or default.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pytest

from edge_node import node_database
from edge_node.abuse import blocks
from edge_node.crypto import schema as crypto_schema
from edge_node.rating import schema as rating_schema
from edge_node.tenants import schema as tenants_schema
from sync.billing import ledger

MIGRATION_LISTS = {
    "node.sqlite node": node_database.MIGRATIONS,
    "node.sqlite tenants": tenants_schema.MIGRATIONS,
    "node.sqlite abuse": blocks.MIGRATIONS,
    "node.sqlite billing": ledger.MIGRATIONS,
    "tenant file": rating_schema.MIGRATIONS,
    "key store": crypto_schema.MIGRATIONS,
}

Column = tuple[str, bool, str | None]  # declared type, NOT NULL, default
Shape = dict[str, dict[str, Column]]  # table -> column -> Column


def shape(conn: sqlite3.Connection) -> Shape:
    """The tables and their columns as the previous release would read and write them."""
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        table: {
            name: (kind.upper(), bool(notnull), default)
            for _, name, kind, notnull, default, _ in conn.execute(f'PRAGMA table_info("{table}")')
        }
        for table in tables
    }


def breaking_changes(before: Shape, after: Shape) -> list[str]:
    """What a migration from `before` to `after` did that the previous release cannot read."""
    problems = []
    for table, columns in before.items():
        if table not in after:
            problems.append(f"table {table} dropped or renamed")
            continue
        for name, column in columns.items():
            if name not in after[table]:
                problems.append(f"column {table}.{name} dropped or renamed")
            elif after[table][name] != column:
                problems.append(f"column {table}.{name} changed: {column} -> {after[table][name]}")
        for name, (_, notnull, default) in after[table].items():
            if name not in columns and notnull and default is None:
                problems.append(f"column {table}.{name} added NOT NULL without a default")
    return problems


def migration_steps(migrations: Sequence[str]) -> list[tuple[int, list[str]]]:
    """Each migration's breaking changes, applying the list in order to an empty file."""
    conn = sqlite3.connect(":memory:")
    steps = []
    for version, script in enumerate(migrations, start=1):
        before = shape(conn)
        conn.executescript(script)
        steps.append((version, breaking_changes(before, shape(conn))))
    conn.close()
    return steps


class TestMigrationsAreAdditive:
    @pytest.mark.parametrize("name", sorted(MIGRATION_LISTS))
    def test_no_migration_drops_renames_or_narrows(self, name: str) -> None:
        """Each migration of the list keeps every table and column of the one before."""
        for version, problems in migration_steps(MIGRATION_LISTS[name]):
            assert problems == [], f"{name} migration {version}: {problems}"

    def test_the_check_catches_a_dropped_a_renamed_and_a_narrowed_column(self) -> None:
        """A renamed column, a dropped one, one made NOT NULL, one added NOT NULL without a
        default and a renamed table are each reported; a column with a default is not."""
        steps = migration_steps(
            [
                "CREATE TABLE t (a INTEGER, b TEXT, c TEXT);",
                "ALTER TABLE t RENAME COLUMN a TO x;",
                "ALTER TABLE t DROP COLUMN b;",
                "CREATE TABLE t2 (x INTEGER NOT NULL, c TEXT, e TEXT NOT NULL); INSERT INTO t2"
                " SELECT x, c, '' FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t;"
                " ALTER TABLE t ADD COLUMN d INTEGER NOT NULL DEFAULT 0;",
                "ALTER TABLE t RENAME TO u;",
            ]
        )
        assert steps[0] == (1, [])
        assert steps[1][1] == ["column t.a dropped or renamed"]
        assert steps[2][1] == ["column t.b dropped or renamed"]
        assert steps[3][1] == [
            "column t.x changed: ('INTEGER', False, None) -> ('INTEGER', True, None)",
            "column t.e added NOT NULL without a default",
        ]
        assert steps[4][1] == ["table t dropped or renamed"]
