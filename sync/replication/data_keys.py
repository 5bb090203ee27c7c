"""Key material on the central database: tenant deletions and tenant data keys (migration 0005).

At the start of each round, before anything else moves (sync/replication/rounds.py):
1. deletions made on this node go up: the central insert destroys the tenant's central rows;
2. deletions made anywhere come down: this node shreds the tenant (edge_node.deletion), so
   its registry rows and ratings are gone before the registry or ratings sync could carry
   them again;
3. with a fleet key (encryption.fleet_key_file), data keys created here go up wrapped by it,
   and data keys created elsewhere come down and are re-wrapped under this node's master key
   (those wrapped by encryption.previous_fleet_key_file too, during a fleet-key rotation).
Keys go up before this round's ratings do, so another node that downloads a sealed comment
gets the key to open it in the same round, or at the latest in its next one.
Downloads resume from checkpoints kept in the key store, like every other table's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_node.crypto.replication import SharedDataKey
from edge_node.deletion import delete_tenant
from edge_node.errors import KeyMaterialError
from sync.postgres import translated
from sync.replication.change_feed import ChangeFeed
from sync.replication.positions import Position

if TYPE_CHECKING:
    from sync.replication.rounds import ShardRound

log = logging.getLogger(__name__)

_UPLOAD_DELETIONS = """
    INSERT INTO tenant_deletions (tenant_id, deleted_at)
    SELECT * FROM unnest($1::uuid[], $2::int8[])
    ON CONFLICT (tenant_id) DO NOTHING"""

_UPLOAD_KEYS = """
    INSERT INTO tenant_data_keys (tenant_id, key_id, wrapped, fleet_key_id, created_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::int8[])
    ON CONFLICT (tenant_id, key_id) DO NOTHING"""


_DELETION_CHANGES = ChangeFeed(
    "tenant deletions",
    "tenant_deletions t",
    "t",
    "t.tenant_id::text AS tenant_id, t.deleted_at",
    (("tenant_id", "uuid"),),
)
_KEY_CHANGES = ChangeFeed(
    "data keys",
    "tenant_data_keys t",
    "t",
    "t.tenant_id::text AS tenant_id, t.key_id, t.wrapped, t.fleet_key_id, t.created_at",
    (("tenant_id", "uuid"), ("key_id", "text")),
)


async def exchange_key_material(round_: ShardRound, database: str) -> None:
    """Steps 1 to 3 of the module doc, for the shard `round_` syncs."""
    await _upload_deletions(round_)
    await _download_deletions(round_, database)
    keyring = round_.edge.stores.keyring
    if keyring.fleet_key is None:
        _warn_without_fleet_key(str(keyring.directory))
        return
    await _upload_keys(round_)
    await _download_keys(round_, database)


@functools.cache
def _warn_without_fleet_key(directory: str) -> None:
    """Once per key store: its comments reach the central database unreadable elsewhere."""
    log.warning(
        "no encryption.fleet_key_file: the data keys in %s stay on this node, so the comments"
        " it syncs read as unreadable on every other node",
        directory,
    )


async def _upload_deletions(round_: ShardRound) -> None:
    keyring = round_.edge.stores.keyring
    deletions = [(t, at) for t, at in keyring.deletions_to_upload() if round_.owns(t)]
    if not deletions:
        return
    with translated(f"uploading {len(deletions)} tenant deletions"):
        async with round_.connection.transaction():
            await round_.connection.execute(
                _UPLOAD_DELETIONS, [t for t, _ in deletions], [at for _, at in deletions]
            )
    keyring.mark_deletions_uploaded(t for t, _ in deletions)


async def _download_deletions(round_: ShardRound, database: str) -> None:
    keyring = round_.edge.stores.keyring

    def apply(records: list[Any]) -> None:
        for record in records:
            tenant_id = record["tenant_id"]
            if round_.owns(tenant_id):
                news = not keyring.is_deleted(tenant_id)
                # Run even when known: it finishes a local deletion a crash interrupted.
                delete_tenant(round_.edge.registry, round_.edge.stores, tenant_id)
                keyring.mark_deletions_uploaded([tenant_id])
                if news:
                    log.warning("tenant %s was deleted centrally: shredded here", tenant_id)

    await _download(round_, database, what="deletions", feed=_DELETION_CHANGES, apply=apply)


async def _upload_keys(round_: ShardRound) -> None:
    keyring = round_.edge.stores.keyring
    keys = [k for k in keyring.keys_to_upload() if round_.owns(k.tenant_id)]
    if not keys:
        return
    columns = [
        [getattr(k, name) for k in keys]
        for name in ("tenant_id", "key_id", "wrapped", "fleet_key_id", "created_at")
    ]
    with translated(f"uploading {len(keys)} tenant data keys"):
        async with round_.connection.transaction():
            await round_.connection.execute(_UPLOAD_KEYS, *columns)
    keyring.mark_uploaded(keys)


async def _download_keys(round_: ShardRound, database: str) -> None:
    keyring = round_.edge.stores.keyring
    _restart_for_new_fleet_keys(round_, database)

    def apply(records: list[Any]) -> None:
        keys = [
            SharedDataKey(
                r["tenant_id"], r["key_id"], r["wrapped"], r["fleet_key_id"], r["created_at"]
            )
            for r in records
            if round_.owns(r["tenant_id"])
        ]
        try:
            keyring.add_shared(keys)
        except KeyMaterialError as exc:  # a key that does not unwrap: report, keep syncing
            log.error("a data key from shard %d was refused: %s", round_.index, exc)

    await _download(round_, database, what="data-keys", feed=_KEY_CHANGES, apply=apply)


def _restart_for_new_fleet_keys(round_: ShardRound, database: str) -> None:
    """Download every data key again when this node holds a fleet key it did not hold when
    its checkpoint was taken: keys wrapped by that key were skipped then (a fleet-key
    rotation, docs/security.md). Keys already held are ignored on arrival."""
    keyring = round_.edge.stores.keyring
    held = {k.key_id for k in (keyring.fleet_key, keyring.previous_fleet_key) if k is not None}
    marker = f"data-keys.shard-{round_.index}.fleet-keys"
    known = keyring.checkpoint(marker)
    if known is not None and held <= set(known.split(",")):
        return
    keyring.set_checkpoint(f"data-keys.shard-{round_.index}", Position.start(database).encode())
    keyring.set_checkpoint(marker, ",".join(sorted(held)))


async def _download(
    round_: ShardRound,
    database: str,
    *,
    what: str,
    feed: ChangeFeed,
    apply: Callable[[list[Any]], None],
) -> None:
    """Every page of `feed` after the checkpoint `what` of this shard, each applied and then
    its checkpoint stored; an empty page stores nothing (as for ratings: not worth a write)."""
    keyring = round_.edge.stores.keyring
    name = f"{what}.shard-{round_.index}"
    position = Position.decode(keyring.checkpoint(name), database)
    while True:
        bound = await round_.download_bound()
        records, position = await feed.read(round_.connection, position, round_.batch_size, bound)
        if records:
            apply(records)
            keyring.set_checkpoint(name, position.encode())
        if len(records) < round_.batch_size:
            return
