"""Ratings as the API serves them: each row's JSON object, encoded once per state of the row.

A page of ratings read from the tenant file is made of its rows' JSON objects. Making one
(its comment opened, its times formatted, the object encoded) costs a few µs, most of a
page's cost; a row unchanged since it was last served makes the same object, so each is kept
encoded, keyed by the row as read (every column, the sealed comment's bytes included). A
kept object never has to be dropped when its row changes, by a write or by anything else
that alters the file: the changed row is another key, and the old one is not asked for again.

What an object holds also depends on the node's data keys (a comment shredded is served
unreadable): every object is dropped when the key ring drops its keys and opened comments
(`TenantSealer.generation`), and the object of a comment that could not be opened is never
kept (its key may arrive by sync, and the next read then opens it). Objects are kept within
a byte budget, dropped all at once past it (a bound, not an LRU: refilling costs one object
each).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from edge_node.clock import format_us
from edge_node.crypto.sealing import TenantSealer
from edge_node.errors import CommentUnreadable, KeyMaterialError
from edge_node.rating.schema import RATING_COLUMNS

# The logger these warnings have had since the store was one module, which operators' log
# queries may name.
log = logging.getLogger("edge_node.rating.store")

# A rating's columns as a page reads them (RATING_COLUMNS: as the API serves it), and the
# origin node, which with updated_at tells two states of a row apart however they were made.
PAGE_COLUMNS = RATING_COLUMNS + ", origin_node"
# Per tenant file: ~600 rows with short comments. A kept object is counted with its key (the
# row as read, its sealed comment included) and what holding both costs besides, measured
# at about ROW_OVERHEAD_BYTES (the row's nine values, the key tuple, the dictionary slot).
ROWS_IN_MEMORY_BYTES = 512 << 10
ROW_OVERHEAD_BYTES = 600


class RowDocuments:
    """The JSON objects of one tenant's rows, kept by version."""

    def __init__(self, sealer: TenantSealer, *, max_bytes: int = ROWS_IN_MEMORY_BYTES) -> None:
        self._sealer = sealer
        self._max_bytes = max_bytes
        self._bytes = 0
        self._encoded: dict[Sequence[Any], bytes] = {}
        self._generation = sealer.generation()

    def page(self, rows: Sequence[Sequence[Any]], cursor: str | None) -> tuple[bytes, bool]:
        """The API's page document of `rows` (PAGE_COLUMNS, as tuples: they are the keys),
        with `cursor` as next_cursor, and whether every comment in it could be opened (a
        page that says otherwise is not one to keep either)."""
        if self._generation != (generation := self._sealer.generation()):
            self._forget()
            self._generation = generation
        encoded = self._encoded
        parts = []
        readable = True
        for row in rows:
            found = encoded.get(row)
            if found is None:
                found, kept = self._encode(row)
                readable = readable and kept
            parts.append(found)
        page = (b'{"ratings":[', b",".join(parts), b'],"next_cursor":', orjson.dumps(cursor), b"}")
        return b"".join(page), readable

    def _encode(self, row: Sequence[Any]) -> tuple[bytes, bool]:
        """The row's object, and whether it is kept: not when its comment could not be
        opened."""
        served = self.served(row)
        if "comment_unreadable" in served:
            return orjson.dumps(served), False
        # Copied to its own size: orjson's result holds about 4 KiB, however short.
        document = memoryview(orjson.dumps(served)).tobytes()
        size = len(document) + len(row[5] or b"") + ROW_OVERHEAD_BYTES
        if self._bytes + size > self._max_bytes:
            self._forget()
        self._bytes += size
        self._encoded[row] = document
        return document, True

    def _forget(self) -> None:
        self._encoded.clear()
        self._bytes = 0

    def served(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row of PAGE_COLUMNS as the API serves it (Rating.to_json's shape), its comment
        opened; made straight from the row, with no Rating in between."""
        rid, tenant_id, user_id, item_id, score, sealed, created_at, updated_at, _ = row
        document = {
            "id": rid,
            "tenant_id": tenant_id,
            "user_id": user_id,
            "item_id": item_id,
            "score": score,
            "comment": None,
            "created_at": format_us(created_at),
            "updated_at": format_us(updated_at),
        }
        try:
            document["comment"] = self._sealer.open(rid, sealed)
        except (CommentUnreadable, KeyMaterialError) as exc:
            log.warning("comment of rating %s (tenant %s) unreadable: %s", rid, tenant_id, exc)
            document["comment_unreadable"] = True
        return document
