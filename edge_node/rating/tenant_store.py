"""One tenant's ratings file: group-committed writes, reads, and the rating queries.

A score read is one primary-key lookup: the aggregates are kept by triggers (`schema`). Score
reads and pages of ratings are kept in memory, as the JSON documents the API serves, until
the file changes (`read_memory`; a page also until the node's data keys do).
Deletes are tombstones (`deleted = 1`, comment erased) so sync can carry them to other
replicas; tombstoned rows are invisible to every read. Every local change records its rating
in the outbox in the same transaction (`replication`, which this store inherits).

Comments are stored sealed (`edge_node.crypto.sealing`): AES-256-GCM under the tenant's data key,
bound to the row. Replication carries the sealed bytes as they are (`RatingRow.comment_sealed`);
only reads and writes through the API open or seal them. A comment this node cannot open
(its key is destroyed or not synced yet, or the ciphertext was moved or altered) is served
as `"comment": null, "comment_unreadable": true` and logged, never as an error.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.crypto.sealing import TenantSealer
from edge_node.rating.model import ItemScore, Rating, RatingInput, encode_cursor
from edge_node.rating.pending import PendingUploads
from edge_node.rating.read_memory import FileVersion, ReadMemory
from edge_node.rating.replication import RatingReplication, rating_id
from edge_node.rating.row_documents import PAGE_COLUMNS, RowDocuments
from edge_node.write_batches import WriteBatches

_FIND = (
    "SELECT id, created_at, updated_at, deleted FROM ratings"
    " WHERE tenant_id = ? AND user_id = ? AND item_id = ?"
)
_CREATE = (
    "INSERT INTO ratings (id, tenant_id, user_id, item_id, score, comment_sealed, created_at,"
    " updated_at, origin_node) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)"
)
# A live rating's new state, in which no indexed column changes.
_REPLACE_LIVE = (
    "UPDATE ratings SET score = ?1, comment_sealed = ?2, updated_at = ?3, origin_node = ?4"
    " WHERE id = ?5"
)
_REVIVE = (
    "UPDATE ratings SET score = ?1, comment_sealed = ?2, created_at = ?3, updated_at = ?3,"
    " origin_node = ?4, deleted = 0 WHERE id = ?5"
)

T = TypeVar("T")
# Items whose scores one tenant file keeps between its changes (~400 bytes each with its
# document: 256 open files hold at most ~100 MiB of scores).
SCORES_IN_MEMORY = 1024
# Pages of ratings one tenant file keeps: at most 256 KiB of them (a page of 50 ratings with
# short comments is ~12 KiB; one above 25.6 KiB is read each time), so 256 open files hold
# at most 64 MiB of pages.
PAGES_IN_MEMORY = 64
PAGES_IN_MEMORY_BYTES = 256 << 10
# A page's key in memory: (the data keys' generation, item_id, user_id, after, limit).
PageKey = tuple[int, str | None, str | None, tuple[int, str] | None, int]


@dataclass(frozen=True, slots=True)
class Page:
    """Ratings as the API serves them (JSON objects), and where the page ended."""

    ratings: list[dict[str, Any]]
    has_more: bool
    last: tuple[int, str] | None  # (created_at, id) of the last rating: the next cursor's


class DeleteDenied(Exception):
    """The rating exists but belongs to another user than the one the credential is bound to."""


class TenantStore(RatingReplication):
    """One tenant's ratings file. Calls are synchronous: each is one short local transaction."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        tenant_id: str,
        node_id: str,
        sealer: TenantSealer,
        pending: PendingUploads | None = None,
        *,
        committed: Callable[[], None] | None = None,
    ) -> None:
        """`committed` is called after each batch of writes has committed (edge_node.rating.store
        looks at the WAL then)."""
        self._conn = conn
        self.tenant_id = tenant_id
        self._node_id = node_id
        self._sealer = sealer
        self._pending = pending
        self.dirty = False  # written since the last background checkpoint was scheduled
        self.batches = WriteBatches(conn, self._batch_begins, committed)
        version = FileVersion(conn)
        self._scores: ReadMemory[str, tuple[ItemScore, bytes]] = ReadMemory(
            version, SCORES_IN_MEMORY
        )
        self._rows = RowDocuments(sealer)
        # A page is kept with whether every comment in it could be opened: one that could
        # not is read again each time (the key may arrive by sync: row_documents).
        self._pages: ReadMemory[PageKey, tuple[bytes, bool]] = ReadMemory(
            version,
            PAGES_IN_MEMORY,
            size=lambda page: len(page[0]),
            max_bytes=PAGES_IN_MEMORY_BYTES,
            keep=lambda page: page[1],
        )
        self._outbox_seen = False

    def close(self) -> None:
        """Close the file, or once the writes queued for its batch have committed."""
        self.batches.close()

    def batched(self, operation: Callable[[], T]) -> Coroutine[Any, Any, T]:
        """Run a write in the transaction shared by the writes of this loop iteration
        (edge_node.write_batches); await it for the write's result."""
        return self.batches.run(operation)

    def _batch_begins(self) -> None:
        self._outbox_seen = False  # a new transaction: the outbox is looked at again

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """The transaction of one write: its own, or within a batch the batch's (which
        undoes a failed write itself)."""
        if self.batches.running:
            return contextlib.nullcontext(self._conn)
        return sqlite.transaction(self._conn)

    def upsert(self, rating: RatingInput) -> tuple[Rating, bool]:
        """Create or replace the (user, item) rating; True when it did not exist before (a
        tombstone revived counts as created, and takes the revival's time as created_at).

        A live rating is replaced by an UPDATE that changes no indexed column, so SQLite
        rewrites none of the rating indexes (all three are partial on `deleted` and hold
        created_at). The row is found by (tenant, user, item), not by its derived id: a rating
        created on the central database may carry an id of its own, which the seal binds."""
        self.dirty = True
        tenant_id, key = self.tenant_id, rating.key
        with self._write():
            row = self._conn.execute(_FIND, (tenant_id, *key)).fetchone()
            if row is None:
                rid, created = rating_id(tenant_id, *key), True
                created_at = updated_at = now_us()
                sealed = self._seal(rid, rating.comment)
                values = (rid, tenant_id, *key, rating.score, sealed, updated_at, self._node_id)
                self._conn.execute(_CREATE, values)
            else:
                rid, created_at, previous, created = row
                # updated_at only moves forward on a row, even if the wall clock steps back.
                updated_at = max(now_us(), previous + 1)
                if created:  # a tombstone revived: created again, now
                    created_at = updated_at
                sealed = self._seal(rid, rating.comment)
                self._conn.execute(
                    _REVIVE if created else _REPLACE_LIVE,
                    (rating.score, sealed, updated_at, self._node_id, rid),
                )
            self._list_pending()
            self._conn.execute("INSERT INTO outbox (rating_id) VALUES (?)", (rid,))
        stored = Rating(rid, tenant_id, *key, rating.score, rating.comment, created_at, updated_at)
        return stored, bool(created)

    def _seal(self, rid: str, comment: str | None) -> bytes | None:
        """The comment sealed for the row `rid`; keys another process destroyed are dropped
        first (a write without a comment uses no key, and skips that look)."""
        if comment is None:
            return None
        self._sealer.refresh()
        return self._sealer.seal(rid, comment)

    def page(
        self,
        *,
        item_id: str | None = None,
        user_id: str | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> Page:
        """Live ratings in (created_at, id) order, strictly after the cursor position."""
        self._sealer.refresh()
        rows, has_more, last = self._page_rows(item_id, user_id, after, limit)
        return Page([self._rows.served(row) for row in rows], has_more, last)

    def page_document(
        self,
        *,
        item_id: str | None = None,
        user_id: str | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> bytes:
        """The page as the API's JSON document (`ratings`, `next_cursor`), encoded; from
        memory while the file is unchanged and the node's data keys have not been dropped
        since it was read (a comment shredded is never served from memory), else made of
        its rows' objects (`edge_node.rating.row_documents`)."""
        self._sealer.refresh()
        key = (self._sealer.generation(), item_id, user_id, after, limit)
        return self._pages.get(key, self._read_page_document)[0]

    def _read_page_document(self, key: PageKey) -> tuple[bytes, bool]:
        _, item_id, user_id, after, limit = key
        rows, has_more, last = self._page_rows(item_id, user_id, after, limit)
        cursor = encode_cursor(last) if has_more and last else None
        return self._rows.page(rows, cursor)

    def _page_rows(
        self,
        item_id: str | None,
        user_id: str | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[Any], bool, tuple[int, str] | None]:
        """Up to `limit` rows (PAGE_COLUMNS) of the page, whether more follow, and the
        (created_at, id) of the last row: the next cursor's position."""
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
            f"SELECT {PAGE_COLUMNS} FROM ratings WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY created_at, id LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        shown = rows[:limit]
        return shown, len(rows) > limit, (shown[-1][6], shown[-1][0]) if shown else None

    def score(self, item_id: str) -> ItemScore:
        """The item's aggregates, from memory while the file is unchanged since they were read
        (`edge_node.rating.read_memory` says how a change by any process is noticed)."""
        return self._scores.get(item_id, self._read_score)[0]

    def score_document(self, item_id: str) -> bytes:
        """The item's score as the API's JSON document, encoded; as fresh as `score`."""
        return self._scores.get(item_id, self._read_score)[1]

    def _read_score(self, item_id: str) -> tuple[ItemScore, bytes]:
        score = self._score_row(item_id)
        # Copied to its own size: orjson's result holds about 4 KiB, however short.
        return score, memoryview(orjson.dumps(score.to_json())).tobytes()

    def _score_row(self, item_id: str) -> ItemScore:
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
        with self._write():
            row = self._conn.execute(
                "SELECT user_id FROM ratings WHERE id = ? AND deleted = 0", (rid,)
            ).fetchone()
            if row is None:
                return False
            if only_user is not None and row[0] != only_user:
                raise DeleteDenied(rid)
            self._conn.execute(
                "UPDATE ratings SET deleted = 1, comment_sealed = NULL, origin_node = ?,"
                " updated_at = max(?, updated_at + 1) WHERE id = ?",
                (self._node_id, now_us(), rid),
            )
            self._list_pending()
            self._conn.execute("INSERT INTO outbox (rating_id) VALUES (?)", (rid,))
        return True

    def erase_user(self, user_id: str) -> int:
        """Tombstone every live rating of a user and erase their comments; how many there were."""
        self.dirty = True
        with self._write():
            self._list_pending()
            self._conn.execute(
                "INSERT INTO outbox (rating_id)"
                " SELECT id FROM ratings WHERE user_id = ? AND deleted = 0",
                (user_id,),
            )
            return self._conn.execute(
                "UPDATE ratings SET deleted = 1, comment_sealed = NULL, origin_node = ?,"
                " updated_at = max(?, updated_at + 1) WHERE user_id = ? AND deleted = 0",
                (self._node_id, now_us(), user_id),
            ).rowcount

    def seal_plaintext_comments(self) -> int:
        """Seal the comments a file written before encryption holds in plain text; how many.

        Each sealed row moves its updated_at on by 1 us and enters the outbox, so the upload
        replaces the plain text on the central database too (the conflict rule lets it in).
        Done once per file: a marker in sync_state spares later opens the scan."""
        done = "SELECT 1 FROM sync_state WHERE key = 'plaintext_comments_sealed'"
        if self._conn.execute(done).fetchone() is not None:
            return 0
        self._sealer.refresh()
        with sqlite.transaction(self._conn):
            rows = self._conn.execute(
                "SELECT id, comment FROM ratings WHERE comment IS NOT NULL"
            ).fetchall()
            self._conn.execute(
                "INSERT INTO sync_state (key, value) VALUES ('plaintext_comments_sealed', '1')"
                " ON CONFLICT (key) DO NOTHING"
            )
            for rid, comment in rows:
                self._conn.execute(
                    "UPDATE ratings SET comment_sealed = ?, comment = NULL,"
                    " updated_at = updated_at + 1 WHERE id = ?",
                    (self._sealer.seal(rid, comment), rid),
                )
                self._conn.execute("INSERT INTO outbox (rating_id) VALUES (?)", (rid,))
        return len(rows)

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
