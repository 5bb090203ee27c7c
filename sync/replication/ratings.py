"""Ratings on the central database: the upload upsert and the changes, shard-wide and per tenant.

Both sides apply one conflict rule, the same as every edge (`edge_node.rating.replication.wins`):
a row replaces another only when its (updated_at, origin_node) is greater. origin_node is
compared byte by byte (`COLLATE "C"`), as SQLite and Python compare text; the database's own
collation could order 'Node-b' and 'node-a' differently on another server. A row that does
not win changes nothing, not even its change position, so uploading a batch twice (a retry
after a lost COMMIT acknowledgement) is a no-op.

Comments travel sealed (`comment_sealed`, migration 0005): the bytes an edge stores are the
bytes the central database stores and every other edge downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_node.rating.replication import RatingRow, wins
from sync.postgres import rows_changed, translated
from sync.replication.change_feed import ChangeFeed

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.downloads import Downloads, FeedPosition

# One statement per batch: the columns travel as ten arrays, which PostgreSQL turns back into
# rows; far cheaper than one INSERT per row, whatever the driver pipelines.
_UPSERT = """
    INSERT INTO ratings AS current (tenant_id, id, user_id, item_id, score, comment_sealed,
                                    created_at, updated_at, origin_node, deleted)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int2[],
                         $6::bytea[], $7::int8[], $8::int8[], $9::text[], $10::bool[])
    ON CONFLICT (tenant_id, user_id, item_id) DO UPDATE SET
        score = excluded.score,
        comment = NULL,
        comment_sealed = excluded.comment_sealed,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        origin_node = excluded.origin_node,
        deleted = excluded.deleted
    WHERE (excluded.updated_at, excluded.origin_node COLLATE "C")
        > (current.updated_at, current.origin_node COLLATE "C")"""

_COLUMNS = """r.id::text AS id, r.user_id, r.item_id, r.score, r.comment_sealed, r.created_at,
        r.updated_at, r.origin_node, r.deleted"""

# Every tenant of the shard at once (index ratings_shard_changes, migration 0003), so an edge
# opens only the tenant files that have changes.
_SHARD_CHANGES = ChangeFeed(
    "the shard's rating changes",
    "ratings r",
    "r",
    f"r.tenant_id::text AS tenant_id, {_COLUMNS}",
    (("tenant_id", "uuid"), ("id", "uuid")),
    binary=("comment_sealed",),
)
# One tenant's, for a tenant the shard's checkpoint does not cover yet (rating_transfer.py).
_TENANT_CHANGES = ChangeFeed(
    "ratings",
    "ratings r",
    "r",
    _COLUMNS,
    (("id", "uuid"),),
    per_tenant=True,
    binary=("comment_sealed",),
)


def latest_per_rating(rows: Sequence[RatingRow]) -> list[RatingRow]:
    """One row per (tenant, user, item), the winner under the rule: an upsert may touch a row
    only once per statement."""
    latest: dict[tuple[str, str, str], RatingRow] = {}
    for row in rows:
        key = (row.tenant_id, row.user_id, row.item_id)
        held = latest.get(key)
        if held is None or wins(row, held):
            latest[key] = row
    return list(latest.values())


async def upload_ratings(connection: Connection, rows: Sequence[RatingRow]) -> int:
    """Upsert `rows` in one transaction under the conflict rule; how many rows changed."""
    rows = latest_per_rating(rows)
    if not rows:
        return 0
    columns = (
        [r.tenant_id for r in rows],
        [r.id for r in rows],
        [r.user_id for r in rows],
        [r.item_id for r in rows],
        [r.score for r in rows],
        [r.comment_sealed for r in rows],
        [r.created_at for r in rows],
        [r.updated_at for r in rows],
        [r.origin_node for r in rows],
        [r.deleted for r in rows],
    )
    with translated(f"uploading {len(rows)} ratings"):
        async with connection.transaction():
            status = await connection.execute(_UPSERT, *columns)
    return rows_changed(status)


async def download_ratings(
    downloads: Downloads, tenant_id: str, since: FeedPosition, limit: int
) -> tuple[list[RatingRow], FeedPosition, bool]:
    """Up to `limit` of the tenant's rows changed after `since` and below the horizon, in
    (change_xid, id) order, the position to resume from, and whether there are more to read
    now (else the tenant is read up to the horizon). The horizon never passes the round's
    durable bound (positions.durable_bound)."""
    records, position, more = await downloads.read(_TENANT_CHANGES, since, limit, tenant_id)
    return [_rating(r, tenant_id) for r in records], position, more


async def download_shard_ratings(
    downloads: Downloads, since: FeedPosition, limit: int
) -> tuple[list[RatingRow], FeedPosition, bool]:
    """Like `download_ratings`, for every tenant of the shard at once, in (change_xid,
    tenant_id, id) order."""
    records, position, more = await downloads.read(_SHARD_CHANGES, since, limit)
    return [_rating(r, r["tenant_id"]) for r in records], position, more


def _rating(r: Any, tenant_id: str) -> RatingRow:
    return RatingRow(
        r["id"],
        tenant_id,
        r["user_id"],
        r["item_id"],
        r["score"],
        r["comment_sealed"],
        r["created_at"],
        r["updated_at"],
        r["origin_node"],
        r["deleted"],
    )
