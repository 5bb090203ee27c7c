"""Fleet-key rotation: re-wrap the central tenant data keys under a new fleet key.

Every row of tenant_data_keys (migration 0005) names the fleet key that wrapped it
(`fleet_key_id`, the key's 16-hex-digit hash, `edge_node.crypto.keystore.WrappingKey.key_id`). With
every node configured with the new key as `encryption.fleet_key_file` and the old one as
`encryption.previous_fleet_key_file`, `edge-node keys rotate-fleet` re-wraps each row still
under the previous key with the current one, in batches of one transaction each, walking the
primary key. A batch interrupted rolls back whole, and rows re-wrapped are never selected
again, so the command is resumable and running it twice changes nothing the second time.

The update moves each row's change_xid (its trigger), so nodes download the re-wrapped keys
again: a node holding them ignores them, a node holding only the new key gets them. Once no
row is left under the old key and no node is configured with it, destroying the old key
leaves every central backup taken before the rotation without a data key that unwraps
(docs/security.md, "Rotating the fleet key").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge_node.errors import KeyMaterialError
from sync.postgres import on_each_database, translated

if TYPE_CHECKING:
    from edge_node.crypto.key_files import WrappingKey
    from sync.postgres import Connection

DEFAULT_BATCH_SIZE = 500

_BATCH = """
    SELECT tenant_id::text AS tenant_id, key_id, wrapped
    FROM tenant_data_keys
    WHERE fleet_key_id = $1
      AND ($2::uuid IS NULL OR (tenant_id, key_id) > ($2::uuid, $3::text))
    ORDER BY tenant_id, key_id
    LIMIT $4
    FOR UPDATE"""

_REWRAP = """
    UPDATE tenant_data_keys k SET wrapped = n.wrapped, fleet_key_id = $4
    FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS n (tenant_id, key_id, wrapped)
    WHERE k.tenant_id = n.tenant_id AND k.key_id = n.key_id"""

_COUNTS = """
    SELECT count(*) FILTER (WHERE fleet_key_id = $1) AS current,
           count(*) FILTER (WHERE fleet_key_id = $2) AS previous,
           count(*) FILTER (WHERE fleet_key_id <> $1 AND fleet_key_id <> $2) AS other
    FROM tenant_data_keys"""


async def rotate_fleet(
    connection: Connection,
    current: WrappingKey,
    previous: WrappingKey | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Re-wrap every data key under `previous` with `current`; the counts, JSON-ready.
    `on_batch` hears the running total re-wrapped after each batch (for a progress line).

    `rewrapped`: rows re-wrapped by this run; `unwrap_failed`: rows naming the previous key
    that do not unwrap with it (altered), left as they are; then the rows under each key
    afterwards. Without `previous` nothing is re-wrapped: the counts tell whether any row is
    still under another key."""
    rewrapped = failed = batches = 0
    after: tuple[str | None, str | None] = (None, None)
    while previous is not None:
        with translated("re-wrapping tenant data keys"):
            async with connection.transaction():
                rows = await connection.fetch(_BATCH, previous.key_id, *after, batch_size)
                fresh = _rewrapped(rows, current, previous)
                if fresh:
                    await connection.execute(
                        _REWRAP,
                        *(list(column) for column in zip(*fresh, strict=True)),
                        current.key_id,
                    )
        batches += bool(rows)
        rewrapped += len(fresh)
        failed += len(rows) - len(fresh)
        if on_batch is not None and rows:
            on_batch(rewrapped)
        if len(rows) < batch_size:
            break
        after = (rows[-1]["tenant_id"], rows[-1]["key_id"])
    return {
        "fleet_key_id": current.key_id,
        "previous_fleet_key_id": None if previous is None else previous.key_id,
        "rewrapped": rewrapped,
        "batches": batches,
        "unwrap_failed": failed,
        **await _counts(connection, current, previous),
    }


def _rewrapped(
    rows: Sequence[Any], current: WrappingKey, previous: WrappingKey
) -> list[tuple[str, str, bytes]]:
    """(tenant, key id, wrapped by `current`) for each row that unwraps with `previous`."""
    fresh = []
    for row in rows:
        tenant_id, key_id = row["tenant_id"], row["key_id"]
        try:
            data_key = previous.unwrap(tenant_id, key_id, row["wrapped"])
        except KeyMaterialError:
            continue
        fresh.append((tenant_id, key_id, current.wrap(tenant_id, key_id, data_key)))
    return fresh


async def _counts(
    connection: Connection, current: WrappingKey, previous: WrappingKey | None
) -> dict[str, int]:
    previous_id = "" if previous is None else previous.key_id
    with translated("counting tenant data keys"):
        [row] = await connection.fetch(_COUNTS, current.key_id, previous_id)
    return {
        "under_fleet_key": int(row["current"]),
        "under_previous_fleet_key": int(row["previous"]),
        "under_other_keys": int(row["other"]),
    }


async def rotate_fleet_dsns(
    dsns: Sequence[str],
    current: WrappingKey,
    previous: WrappingKey | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """`rotate_fleet` on each database (every shard holds its own tenants' keys)."""
    return await on_each_database(
        dsns,
        lambda c: rotate_fleet(c, current, previous, batch_size=batch_size, on_batch=on_batch),
    )
