"""node.sqlite: one file for the node's own state, in which each concept owns its tables.

Tenants and their keys (edge_node.tenants.schema), abuse blocks (edge_node.abuse.blocks) and
the billing ledger (sync.billing.ledger) each keep the migrations of their own tables and
apply them when they open the file (`sqlite.migrate(..., component=...)`); a component's
version is its row in `schema_versions`. This module owns what every component shares:
opening the file, `sync_state` (named values: download checkpoints, planning positions,
Idempotency-Key generations) and `node_health` (the write readiness makes).

Files written before components had versions carry one sequence in `PRAGMA user_version`
(1 to 6). Opening one records each component at the version that sequence implied, once,
and leaves user_version as it was, so a release from before can still open the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from edge_node import sqlite
from edge_node.clock import now_us

log = logging.getLogger(__name__)
COMPONENT = "node"
MIGRATIONS = (
    """
    CREATE TABLE node_health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE sync_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)

# The user_version at which the single sequence of old files applied each component's
# migrations, in order: a file at user_version 3 has tenants at 3, node at 2, billing at 1.
_BEFORE_COMPONENTS = {
    COMPONENT: (1, 2),
    "tenants": (1, 2, 3, 4, 5),
    "billing": (3, 5),
    "abuse": (6,),
}


def open_node_database(data_dir: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection to data_dir/node.sqlite with its shared tables migrated, synchronous
    FULL: what it commits (tenants, keys, billing confirmations) survives power loss. Each
    component migrates its own tables when it first uses the connection."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite.connect(
        data_dir / "node.sqlite", synchronous="full", busy_timeout_ms=busy_timeout_ms
    )
    try:
        _adopt_components(conn)
        sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)
    except BaseException:
        conn.close()
        raise
    return conn


def _adopt_components(conn: sqlite3.Connection) -> None:
    """Give a file from before component versions its components' versions, once."""
    if sqlite.schema_version(conn) == 0 or sqlite.schema_version(conn, COMPONENT) > 0:
        return
    with sqlite.transaction(conn):
        legacy = sqlite.schema_version(conn)
        if sqlite.schema_version(conn, COMPONENT) > 0:  # another process adopted it meanwhile
            return
        sqlite.set_component_versions(
            conn,
            {
                name: sum(v <= legacy for v in applied)
                for name, applied in _BEFORE_COMPONENTS.items()
            },
        )


def read_value(conn: sqlite3.Connection, name: str) -> str | None:
    """The named value in `sync_state`, None when unset."""
    row = conn.execute("SELECT value FROM sync_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def write_value(conn: sqlite3.Connection, name: str, value: str) -> None:
    """Set a named value, in the caller's transaction (or on its own)."""
    conn.execute(
        "INSERT INTO sync_state (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def values_named(conn: sqlite3.Connection, prefix: str) -> list[tuple[str, str]]:
    """Every named value whose name starts with `prefix`, by name."""
    rows = conn.execute(
        "SELECT name, value FROM sync_state WHERE substr(name, 1, ?) = ? ORDER BY name",
        (len(prefix), prefix),
    ).fetchall()
    return [(str(name), str(value)) for name, value in rows]


def delete_value(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM sync_state WHERE name = ?", (name,))


def check_writable(conn: sqlite3.Connection) -> None:
    """A real write to node.sqlite, for readiness: raises sqlite3.Error when it cannot."""
    with sqlite.transaction(conn):
        conn.execute(
            "INSERT INTO node_health (id, checked_at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            (now_us(),),
        )


class NodeFileWatch:
    """Notices node.sqlite deleted or replaced under a process that has it open.

    SQLite keeps writing to the file it opened: once the path names another file (restored
    by hand, replaced by a copy) or none, this process and every `edge-node` command would
    each hold their own node.sqlite. The (device, inode) the path had at open is compared
    with what it has now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)
        self._reported = False

    def problem(self) -> str | None:
        """Why the open file is no longer the data directory's node.sqlite (logged once), or
        None while it is."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            problem = f"{self.path} was deleted under the running node"
        else:
            if (info.st_dev, info.st_ino) == self._identity:
                return None
            problem = f"{self.path} was replaced under the running node"
        problem += (
            " (it still uses the file it opened); stop it, put the right file in place (or "
            "restore a backup: docs/operations.md) and start it again"
        )
        if not self._reported:
            self._reported = True
            log.error("%s", problem)
        return problem
