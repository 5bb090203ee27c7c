"""A tenant file's side of rating sync: replicated rows, the conflict rule, the outbox.

Every local change records its rating in the outbox in the same transaction (the writes in
edge_node.rating.tenant_store call `_list_pending` first, which lists the tenant for the sync
worker when its outbox was empty: edge_node/rating/pending.py). The sync worker uploads the
current state of outboxed ratings (`pending_changes`) and forgets the entries once the
central database has committed them (`acknowledge_uploaded`). Changes downloaded from the
central database are applied under the conflict rule (`wins`) and never enter the outbox.
Rows travel with their comment sealed, as stored (`RatingRow.comment_sealed`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.rating.pending import PendingUploads
from edge_node.rating.schema import ROW_COLUMNS
from edge_node.write_batches import WriteBatches

# Rating ids are derived from (tenant, user, item): the same logical rating has the same id on
# every replica, so sync never has to reconcile two ids for one row.
RATING_ID_NAMESPACE = uuid.UUID("6f1c7a52-3f0e-4c55-9a53-5c1e0e8b7d41")


_NAMESPACE_BYTES = RATING_ID_NAMESPACE.bytes


def rating_id(tenant_id: str, user_id: str, item_id: str) -> str:
    """uuid.uuid5(RATING_ID_NAMESPACE, "tenant\\0user\\0item") as a string, made without the
    UUID object's validation (half the cost on every rating created)."""
    name = f"{tenant_id}\x00{user_id}\x00{item_id}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    hexa = digest[:16].hex()
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


@dataclass(frozen=True, slots=True)
class RatingRow:
    """A rating's full replicated state, tombstones included (times in microseconds)."""

    id: str
    tenant_id: str
    user_id: str
    item_id: str
    score: int
    comment_sealed: bytes | None  # as stored: sealed under the tenant's data key
    created_at: int
    updated_at: int
    origin_node: str
    deleted: bool


def conflict_key(row: RatingRow) -> tuple[int, str]:
    """What the conflict rule compares: the later write wins, the origin node breaks ties."""
    return row.updated_at, row.origin_node


def wins(a: RatingRow, b: RatingRow) -> bool:
    """The conflict rule, the same on every replica (and in the central upsert)."""
    return conflict_key(a) > conflict_key(b)


def _row(values: Sequence[object]) -> RatingRow:
    return RatingRow(*values[:9], bool(values[9]))  # type: ignore[arg-type, call-arg]


class RatingReplication:
    """The replicated side of TenantStore (edge_node.rating.tenant_store), which inherits it,
    so that requests and the sync worker share the tenant file's one connection."""

    _conn: sqlite3.Connection
    tenant_id: str
    dirty: bool
    _pending: PendingUploads | None
    batches: WriteBatches  # TenantStore's group commit
    _outbox_seen: bool  # the batch's transaction has looked at the outbox (_list_pending)

    def pending_changes(self, limit: int) -> tuple[list[RatingRow], int]:
        """The current state of up to `limit` ratings awaiting upload, and the last outbox seq.

        Several outbox entries for one rating yield its state once; acknowledging the seq
        returned covers them all.
        """
        entries = self._conn.execute(
            "SELECT seq, rating_id FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        if not entries:
            return [], 0
        ids = list(dict.fromkeys(rid for _, rid in entries))
        # central.batch_size may pass this build's limit on parameters (32766 by default).
        per_statement = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        by_id: dict[str, RatingRow] = {}
        for start in range(0, len(ids), per_statement):
            chunk = ids[start : start + per_statement]
            rows = self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM ratings"  # noqa: S608
                f" WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            by_id.update((row[0], _row(row)) for row in rows)
        return [by_id[rid] for rid in ids if rid in by_id], entries[-1][0]

    def acknowledge_uploaded(self, up_to_seq: int) -> None:
        """Forget outbox entries up to `up_to_seq`: the central database has committed them."""
        with sqlite.transaction(self._conn):
            self._conn.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))
            emptied = not self._conn.execute("SELECT EXISTS (SELECT 1 FROM outbox)").fetchone()[0]
        if emptied:
            self.unlist_if_idle()

    def _list_pending(self) -> None:
        """Inside a write transaction, before an outbox write: list the tenant as pending
        upload when its outbox is still empty (edge_node/rating/pending.py).

        In a batch, the first write's look serves every write of the batch's transaction:
        entries found then stay until COMMIT (only a transaction of their own removes them,
        and the batch holds the write lock), and a listing stays even when the write that
        made it is rolled back (a listed tenant with an empty outbox costs one look)."""
        if self._pending is None or (self.batches.running and self._outbox_seen):
            return
        if not self._conn.execute("SELECT EXISTS (SELECT 1 FROM outbox)").fetchone()[0]:
            self._pending.mark(self.tenant_id)
        self._outbox_seen = True

    def unlist_if_idle(self) -> None:
        """Unlist the tenant from the pending uploads when its outbox is empty, under this
        file's write lock so that no writer adds an entry meanwhile. Its own transaction,
        which writes nothing here: should its COMMIT fail, no outbox entry was lost."""
        if self._pending is None:
            return
        with sqlite.transaction(self._conn):
            if not self._conn.execute("SELECT EXISTS (SELECT 1 FROM outbox)").fetchone()[0]:
                self._pending.unmark(self.tenant_id)

    def apply_remote(self, rows: Sequence[RatingRow]) -> int:
        """Apply downloaded rows that win against the local state; how many were applied."""
        self.dirty = True
        with sqlite.transaction(self._conn):
            return self._apply_remote(rows)

    def download_checkpoint(self) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM sync_state WHERE key = 'download_checkpoint'"
        ).fetchone()
        return None if row is None else str(row[0])

    def set_download_checkpoint(self, checkpoint: str, rows: Sequence[RatingRow]) -> int:
        """Apply downloaded rows and move the checkpoint past them, in one transaction."""
        self.dirty = True
        with sqlite.transaction(self._conn):
            applied = self._apply_remote(rows)
            self._conn.execute(
                "INSERT INTO sync_state (key, value) VALUES ('download_checkpoint', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (checkpoint,),
            )
        return applied

    def _apply_remote(self, rows: Sequence[RatingRow]) -> int:
        applied = 0
        for row in rows:
            if row.tenant_id != self.tenant_id:
                raise ValueError(f"row of tenant {row.tenant_id} offered to {self.tenant_id}")
            local = self._conn.execute(
                "SELECT updated_at, origin_node FROM ratings"
                " WHERE tenant_id = ? AND user_id = ? AND item_id = ?",
                (row.tenant_id, row.user_id, row.item_id),
            ).fetchone()
            if local is not None and conflict_key(row) <= tuple(local):
                continue
            self._conn.execute(
                f"INSERT INTO ratings ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (tenant_id, user_id, item_id) DO UPDATE SET"
                " score = excluded.score, comment_sealed = excluded.comment_sealed,"
                " created_at = excluded.created_at, updated_at = excluded.updated_at,"
                " origin_node = excluded.origin_node, deleted = excluded.deleted",
                (
                    row.id,
                    row.tenant_id,
                    row.user_id,
                    row.item_id,
                    row.score,
                    row.comment_sealed,
                    row.created_at,
                    row.updated_at,
                    row.origin_node,
                    int(row.deleted),
                ),
            )
            applied += 1
        return applied
