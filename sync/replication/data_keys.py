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
Both are replicated tables (replicated_table.py) whose checkpoints are kept in the key store.
Unlike the registry's rows they are never set aside (all of a round's go up in one
transaction, whose refusal fails the round) nor counted in the round's report.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_node.crypto.keystore import Keyring
from edge_node.crypto.replication import SharedDataKey
from edge_node.deletion import delete_tenant
from edge_node.errors import KeyMaterialError
from sync.postgres import as_columns, rows_changed, translated
from sync.replication.change_feed import ChangeFeed
from sync.replication.positions import Position
from sync.replication.replicated_table import Checkpoint, ReplicatedTable, Upload
from sync.replication.round_values import EdgeStorage

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.change_feed import FeedRow

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
    binary=("wrapped",),
)


def tenant_deletions(edge: EdgeStorage) -> ReplicatedTable[tuple[str, int]]:
    """Steps 1 and 2 of the module doc: deletions as a round moves them."""
    keyring = edge.stores.keyring

    def apply(records: list[FeedRow], checkpoint: Checkpoint) -> int:
        shredded = sum(_shred(edge, r["tenant_id"]) for r in records)
        keyring.set_checkpoint(*checkpoint)
        return shredded

    return ReplicatedTable(
        name="deletions",
        feed=_DELETION_CHANGES,
        read_checkpoint=keyring.checkpoint,
        apply=apply,
        upload=Upload(
            pending=keyring.deletions_to_upload,
            tenant=lambda deletion: deletion[0],
            send=_upload_deletions,
            acknowledge=lambda deletions: keyring.mark_deletions_uploaded(t for t, _ in deletions),
        ),
        reported=False,
    )


def data_keys(edge: EdgeStorage, database: str) -> ReplicatedTable[SharedDataKey]:
    """Step 3 of the module doc: data keys as a round moves them, when this node has a fleet
    key."""
    keyring = edge.stores.keyring

    def apply(records: list[FeedRow], checkpoint: Checkpoint) -> int:
        added = _add_shared(keyring, [_data_key(r) for r in records], checkpoint[0])
        keyring.set_checkpoint(*checkpoint)
        return added

    return ReplicatedTable(
        name="data-keys",
        feed=_KEY_CHANGES,
        read_checkpoint=lambda name: _checkpoint_for_held_fleet_keys(keyring, name, database),
        apply=apply,
        upload=Upload(
            pending=keyring.keys_to_upload,
            tenant=lambda key: key.tenant_id,
            send=_upload_keys,
            acknowledge=keyring.mark_uploaded,
        ),
        reported=False,
        enabled=_holds_fleet_key(keyring),
    )


def _holds_fleet_key(keyring: Keyring) -> bool:
    if keyring.fleet_key is None:
        _warn_without_fleet_key(str(keyring.directory))
    return keyring.fleet_key is not None


@functools.cache
def _warn_without_fleet_key(directory: str) -> None:
    """Once per key store: its comments reach the central database unreadable elsewhere."""
    log.warning(
        "no encryption.fleet_key_file: the data keys in %s stay on this node, so the comments"
        " it syncs read as unreadable on every other node",
        directory,
    )


async def _upload_deletions(connection: Connection, deletions: Sequence[tuple[str, int]]) -> int:
    with translated(f"uploading {len(deletions)} tenant deletions"):
        async with connection.transaction():
            status = await connection.execute(
                _UPLOAD_DELETIONS, [t for t, _ in deletions], [at for _, at in deletions]
            )
    return rows_changed(status)


def _shred(edge: EdgeStorage, tenant_id: str) -> bool:
    """Shred a tenant deleted centrally; whether that is news here."""
    keyring = edge.stores.keyring
    news = not keyring.is_deleted(tenant_id)
    # Run even when known: it finishes a local deletion a crash interrupted.
    delete_tenant(edge.registry, edge.stores, tenant_id)
    keyring.mark_deletions_uploaded([tenant_id])
    if news:
        log.warning("tenant %s was deleted centrally: shredded here", tenant_id)
    return news


async def _upload_keys(connection: Connection, keys: Sequence[SharedDataKey]) -> int:
    columns = as_columns(keys, ("tenant_id", "key_id", "wrapped", "fleet_key_id", "created_at"))
    with translated(f"uploading {len(keys)} tenant data keys"):
        async with connection.transaction():
            status = await connection.execute(_UPLOAD_KEYS, *columns)
    return rows_changed(status)


def _data_key(record: FeedRow) -> SharedDataKey:
    return SharedDataKey(
        record["tenant_id"],
        record["key_id"],
        record["wrapped"],
        record["fleet_key_id"],
        record["created_at"],
    )


def _add_shared(keyring: Keyring, keys: list[SharedDataKey], checkpoint: str) -> int:
    """Store downloaded data keys; how many were new here."""
    try:
        return keyring.add_shared(keys)
    except KeyMaterialError as exc:  # a key that does not unwrap: report, keep syncing
        log.error("a data key downloaded for %s was refused: %s", checkpoint, exc)
        return 0


def _checkpoint_for_held_fleet_keys(keyring: Keyring, name: str, database: str) -> str | None:
    """The checkpoint `name`, moved back to the start when this node holds a fleet key it did
    not hold when the checkpoint was taken: keys wrapped by that key were skipped then (a
    fleet-key rotation, docs/security.md). Keys already held are ignored on arrival."""
    held = {k.key_id for k in (keyring.fleet_key, keyring.previous_fleet_key) if k is not None}
    marker = f"{name}.fleet-keys"
    known = keyring.checkpoint(marker)
    if known is None or not held <= set(known.split(",")):
        keyring.set_checkpoint(name, Position.start(database).encode())
        keyring.set_checkpoint(marker, ",".join(sorted(held)))
    return keyring.checkpoint(name)
