"""Per-tenant SQLite storage of ratings: one file per tenant under data_dir/tenants/.

Score aggregates (count, sum, histogram) live in `item_scores` and are kept by triggers on
`ratings`, so every insert, update, tombstone and purge adjusts them inside the writing
transaction whichever code path wrote the row: a score read is one primary-key lookup.

Deletes are tombstones (`deleted = 1`, comment erased) so a later sync can carry them to
other replicas; tombstoned rows are invisible to every read.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.rating.model import ItemScore, Rating, RatingInput

log = logging.getLogger(__name__)
BACKSTOP_CHECKPOINT_PAGES = 20000

# Rating ids are derived from (tenant, user, item): the same logical rating has the same id on
# every replica, so sync never has to reconcile two ids for one row.
RATING_ID_NAMESPACE = uuid.UUID("6f1c7a52-3f0e-4c55-9a53-5c1e0e8b7d41")

_SCORE_ADD = """
    INSERT INTO item_scores (tenant_id, item_id, count, total, s1, s2, s3, s4, s5)
    VALUES (NEW.tenant_id, NEW.item_id, 1, NEW.score,
            NEW.score = 1, NEW.score = 2, NEW.score = 3, NEW.score = 4, NEW.score = 5)
    ON CONFLICT (tenant_id, item_id) DO UPDATE SET
        count = count + 1, total = total + NEW.score,
        s1 = s1 + (NEW.score = 1), s2 = s2 + (NEW.score = 2), s3 = s3 + (NEW.score = 3),
        s4 = s4 + (NEW.score = 4), s5 = s5 + (NEW.score = 5);"""

_SCORE_REMOVE = """
    UPDATE item_scores SET
        count = count - 1, total = total - OLD.score,
        s1 = s1 - (OLD.score = 1), s2 = s2 - (OLD.score = 2), s3 = s3 - (OLD.score = 3),
        s4 = s4 - (OLD.score = 4), s5 = s5 - (OLD.score = 5)
    WHERE tenant_id = OLD.tenant_id AND item_id = OLD.item_id;"""

MIGRATIONS = (
    f"""
    CREATE TABLE ratings (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
        item_id TEXT NOT NULL CHECK (length(item_id) BETWEEN 1 AND 128),
        score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
        comment TEXT CHECK (comment IS NULL OR length(comment) <= 2000),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        origin_node TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
        UNIQUE (tenant_id, user_id, item_id)
    ) WITHOUT ROWID;
    CREATE INDEX ratings_in_order ON ratings (created_at, id) WHERE deleted = 0;
    CREATE INDEX ratings_by_item ON ratings (item_id, created_at, id) WHERE deleted = 0;
    CREATE INDEX ratings_by_user ON ratings (user_id, created_at, id) WHERE deleted = 0;
    CREATE TABLE item_scores (
        tenant_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        total INTEGER NOT NULL,
        s1 INTEGER NOT NULL, s2 INTEGER NOT NULL, s3 INTEGER NOT NULL,
        s4 INTEGER NOT NULL, s5 INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, item_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER ratings_score_on_insert AFTER INSERT ON ratings WHEN NEW.deleted = 0
    BEGIN {_SCORE_ADD}
    END;
    CREATE TRIGGER ratings_score_on_update_old AFTER UPDATE ON ratings WHEN OLD.deleted = 0
    BEGIN {_SCORE_REMOVE}
    END;
    CREATE TRIGGER ratings_score_on_update_new AFTER UPDATE ON ratings WHEN NEW.deleted = 0
    BEGIN {_SCORE_ADD}
    END;
    CREATE TRIGGER ratings_score_on_delete AFTER DELETE ON ratings WHEN OLD.deleted = 0
    BEGIN {_SCORE_REMOVE}
    END;
    """,
)

_RATING_COLUMNS = "id, tenant_id, user_id, item_id, score, comment, created_at, updated_at"


def rating_id(tenant_id: str, user_id: str, item_id: str) -> str:
    return str(uuid.uuid5(RATING_ID_NAMESPACE, f"{tenant_id}\x00{user_id}\x00{item_id}"))


@dataclass(frozen=True, slots=True)
class Page:
    ratings: list[Rating]
    has_more: bool


class DeleteDenied(Exception):
    """The rating exists but belongs to another user than the one the credential is bound to."""


class TenantStore:
    """One tenant's ratings file. Calls are synchronous: each is one short local transaction."""

    def __init__(self, conn: sqlite3.Connection, tenant_id: str, node_id: str) -> None:
        self._conn = conn
        self.tenant_id = tenant_id
        self._node_id = node_id
        self.dirty = False  # written since the last background checkpoint was scheduled

    def close(self) -> None:
        self._conn.close()

    def upsert(self, rating: RatingInput) -> tuple[Rating, bool]:
        """Create or replace the (user, item) rating; True when it did not exist before."""
        conn = self._conn
        self.dirty = True
        with sqlite.transaction(conn):
            row = conn.execute(
                "SELECT id, created_at, updated_at, deleted FROM ratings"
                " WHERE tenant_id = ? AND user_id = ? AND item_id = ?",
                (self.tenant_id, rating.user_id, rating.item_id),
            ).fetchone()
            if row is None:
                now = now_us()
                rid, created_at, created = rating_id(self.tenant_id, *rating.key), now, True
                conn.execute(
                    "INSERT INTO ratings (id, tenant_id, user_id, item_id, score, comment,"
                    " created_at, updated_at, origin_node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rid,
                        self.tenant_id,
                        *rating.key,
                        rating.score,
                        rating.comment,
                        now,
                        now,
                        self._node_id,
                    ),
                )
            else:
                rid, created_at, previous, deleted = row
                # updated_at only moves forward on this row, even if the wall clock steps back.
                now = max(now_us(), previous + 1)
                created = bool(deleted)
                if created:
                    created_at = now
                conn.execute(
                    "UPDATE ratings SET score = ?, comment = ?, created_at = ?, updated_at = ?,"
                    " origin_node = ?, deleted = 0 WHERE id = ?",
                    (rating.score, rating.comment, created_at, now, self._node_id, rid),
                )
        stored = Rating(
            rid, self.tenant_id, *rating.key, rating.score, rating.comment, created_at, now
        )
        return stored, created

    def page(
        self,
        *,
        item_id: str | None = None,
        user_id: str | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> Page:
        """Live ratings in (created_at, id) order, strictly after the cursor position."""
        clauses: list[str] = ["deleted = 0"]
        params: list[object] = []
        if item_id is not None:
            clauses.append("item_id = ?")
            params.append(item_id)
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        if after is not None:
            clauses.append("(created_at, id) > (?, ?)")
            params.extend(after)
        rows = self._conn.execute(
            f"SELECT {_RATING_COLUMNS} FROM ratings WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY created_at, id LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        return Page([Rating(*row) for row in rows[:limit]], has_more=len(rows) > limit)

    def score(self, item_id: str) -> ItemScore:
        row = self._conn.execute(
            "SELECT count, total, s1, s2, s3, s4, s5 FROM item_scores"
            " WHERE tenant_id = ? AND item_id = ?",
            (self.tenant_id, item_id),
        ).fetchone()
        if row is None:
            return ItemScore(item_id, 0, 0, (0, 0, 0, 0, 0))
        return ItemScore(item_id, row[0], row[1], tuple(row[2:]))

    def delete(self, rid: str, *, only_user: str | None = None) -> bool:
        """Tombstone one rating; False when there is no live rating with that id."""
        self.dirty = True
        with sqlite.transaction(self._conn):
            row = self._conn.execute(
                "SELECT user_id FROM ratings WHERE id = ? AND deleted = 0", (rid,)
            ).fetchone()
            if row is None:
                return False
            if only_user is not None and row[0] != only_user:
                raise DeleteDenied(rid)
            self._conn.execute(
                "UPDATE ratings SET deleted = 1, comment = NULL, origin_node = ?,"
                " updated_at = max(?, updated_at + 1) WHERE id = ?",
                (self._node_id, now_us(), rid),
            )
        return True

    def erase_user(self, user_id: str) -> int:
        """Tombstone every live rating of a user and erase their comments; how many there were."""
        self.dirty = True
        with sqlite.transaction(self._conn):
            return self._conn.execute(
                "UPDATE ratings SET deleted = 1, comment = NULL, origin_node = ?,"
                " updated_at = max(?, updated_at + 1) WHERE user_id = ? AND deleted = 0",
                (self._node_id, now_us(), user_id),
            ).rowcount

    def recompute_scores(self) -> dict[str, ItemScore]:
        """Scores computed from the rows themselves, bypassing the aggregates (for checks)."""
        rows = self._conn.execute(
            "SELECT item_id, score, count(*) FROM ratings WHERE deleted = 0 GROUP BY item_id, score"
        ).fetchall()
        histograms: dict[str, list[int]] = {}
        for item_id, score, count in rows:
            histograms.setdefault(item_id, [0] * 5)[score - 1] = count
        return {
            item: ItemScore(item, sum(h), sum((i + 1) * n for i, n in enumerate(h)), tuple(h))
            for item, h in histograms.items()
        }


class TenantStores:
    """Opens tenant files on demand and keeps the most recently used ones open."""

    def __init__(
        self,
        directory: Path,
        *,
        node_id: str,
        synchronous: sqlite.Synchronous = "normal",
        max_open: int = 256,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.directory = directory
        self._node_id = node_id
        self._synchronous = synchronous
        self._max_open = max_open
        self._busy_timeout_ms = busy_timeout_ms
        self._open: OrderedDict[str, TenantStore] = OrderedDict()
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, tenant_id: str) -> Path:
        # tenant_id is a canonical UUID by the time it gets here (the router checks), so it
        # cannot name a path outside the directory.
        return self.directory / f"{tenant_id}.sqlite"

    def get(self, tenant_id: str) -> TenantStore:
        store = self._open.get(tenant_id)
        if store is not None:
            self._open.move_to_end(tenant_id)
            return store
        conn = sqlite.connect(
            self.path(tenant_id),
            synchronous=self._synchronous,
            busy_timeout_ms=self._busy_timeout_ms,
        )
        sqlite.migrate(conn, MIGRATIONS)
        # Checkpoints run in the background (run_checkpoints); this high threshold is only a
        # backstop should they stall, so the request path almost never pays for one.
        conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}")
        store = TenantStore(conn, tenant_id, self._node_id)
        self._open[tenant_id] = store
        if len(self._open) > self._max_open:
            _, evicted = self._open.popitem(last=False)
            evicted.close()
        return store

    def close(self) -> None:
        while self._open:
            _, store = self._open.popitem()
            store.close()

    async def run_checkpoints(self, interval: float) -> None:
        """Checkpoint every tenant file written since the last round, off the event loop."""
        while True:
            await asyncio.sleep(interval)
            written = [store for store in self._open.values() if store.dirty]
            for store in written:
                store.dirty = False
            for store in written:
                try:
                    await asyncio.to_thread(
                        sqlite.checkpoint, self.path(store.tenant_id), self._busy_timeout_ms
                    )
                except sqlite3.Error as exc:
                    store.dirty = True
                    log.warning("checkpoint of tenant %s failed: %s", store.tenant_id, exc)
