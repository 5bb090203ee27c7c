"""The key store's file, keys/data-keys.sqlite: its tables and the rows read beside the keys.

`data_keys` holds each tenant data key wrapped by the master key, `deleted_tenants` the
tenants shredded here or anywhere in the fleet, and `meta` named values: the id of the
master key the data keys are wrapped by (`master_key_id`) and the sync checkpoints
(`sync:<name>`). The key store (edge_node.crypto.keystore) and its replication
(edge_node.crypto.replication) read and write them through the helpers here.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS = (
    """
    CREATE TABLE data_keys (
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL CHECK (length(key_id) = 16),
        wrapped BLOB NOT NULL,
        master_key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0 CHECK (uploaded IN (0, 1)),
        PRIMARY KEY (tenant_id, key_id)
    ) WITHOUT ROWID;
    CREATE TABLE deleted_tenants (
        tenant_id TEXT PRIMARY KEY,
        deleted_at INTEGER NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0 CHECK (uploaded IN (0, 1))
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)


def meta(conn: sqlite3.Connection, name: str) -> str | None:
    """The value stored under `name`, or None when there is none."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def is_deleted(conn: sqlite3.Connection, tenant_id: str) -> bool:
    """Whether the tenant was deleted (its data keys destroyed), here or elsewhere."""
    return (
        conn.execute("SELECT 1 FROM deleted_tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        is not None
    )
