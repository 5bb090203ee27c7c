"""Which tenants have ratings waiting in their outbox: a small SQLite index beside their files.

The sync worker uploads only the tenants listed here, so a round opens the files that have
something to send instead of every tenant file. The rule that keeps the index complete,
across every process writing the tenant files (`serve --workers N`):

    a tenant whose outbox is not empty is listed.

A writer checks, inside its own write transaction on the tenant file (holding that file's
write lock), whether the outbox is empty; if it is, it lists the tenant (committed at once)
before adding the outbox entry. The sync worker unlists a tenant only inside a write
transaction on the tenant file that finds the outbox empty, so no writer can slip an entry in
between. A listed tenant with an empty outbox (a write that rolled back) costs one look.

The file is a cache of the outboxes: when it is missing (a node upgraded from a version
without it, a data directory restored without it) it is rebuilt by looking at every tenant
file once (`rebuild`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

from edge_node import sqlite

FILE_NAME = "pending-uploads.sqlite3"
_SCHEMA = (
    """
    CREATE TABLE pending (tenant_id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE rebuilt (done INTEGER PRIMARY KEY CHECK (done = 1));
    """,
)


class PendingUploads:
    """The set of tenants with outbox entries, shared by every process of the node."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._conn = sqlite.connect(path, busy_timeout_ms=busy_timeout_ms)
        sqlite.migrate(self._conn, _SCHEMA)

    @property
    def complete(self) -> bool:
        """False until `rebuild` has once looked at every tenant file of this data directory."""
        row = self._conn.execute("SELECT EXISTS (SELECT 1 FROM rebuilt)").fetchone()
        return bool(row[0])

    def close(self) -> None:
        self._conn.close()

    def mark(self, tenant_id: str) -> None:
        """List `tenant_id` (call from inside its write transaction, before its outbox write)."""
        self._conn.execute("INSERT OR IGNORE INTO pending (tenant_id) VALUES (?)", (tenant_id,))

    def unmark(self, tenant_id: str) -> None:
        """Unlist `tenant_id` (call only from a write transaction that found its outbox empty)."""
        self._conn.execute("DELETE FROM pending WHERE tenant_id = ?", (tenant_id,))

    def tenants(self) -> list[str]:
        return [row[0] for row in self._conn.execute("SELECT tenant_id FROM pending")]

    def rebuild(self, directory: Path) -> int:
        """List every tenant file of `directory` whose outbox is not empty, then record the
        index complete (a crash half-way rebuilds again); how many were listed."""
        found = 0
        for path in sorted(directory.glob("*.sqlite")):
            tenant_id = path.stem
            if not _is_uuid(tenant_id):
                continue
            if _has_outbox_entries(path):
                self.mark(tenant_id)
                found += 1
        self._conn.execute("INSERT OR IGNORE INTO rebuilt (done) VALUES (1)")
        return found


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _has_outbox_entries(path: Path) -> bool:
    """True unless the file's outbox is readable and empty (a doubt lists the tenant)."""
    try:
        # absolute(): a relative data directory (the default ./var) has no file URI.
        uri = f"{path.absolute().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM outbox)").fetchone()
            return bool(row[0])
    except sqlite3.Error:
        return True
