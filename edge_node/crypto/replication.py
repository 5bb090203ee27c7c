"""The key store's replication: data keys and tenant deletions to and from the central registry.

The sync worker (sync/replication/data_keys.py) uploads the data keys created here, re-wrapped by
the fleet key, and the tenants deleted here; it stores the data keys other nodes uploaded,
re-wrapped by this node's master key, and their deletions. During a fleet-key rotation keys
wrapped by the previous fleet key still unwrap, and uploads use the current one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.crypto.key_files import WrappingKey
from edge_node.crypto.schema import is_deleted, meta, set_meta
from edge_node.errors import KeyMaterialError


@dataclass(frozen=True, slots=True)
class SharedDataKey:
    """A data key as it travels to and from the central registry: wrapped by the fleet key."""

    tenant_id: str
    key_id: str
    wrapped: bytes
    fleet_key_id: str
    created_at: int


class KeyReplication:
    """The replicated side of Keyring (edge_node.crypto.keystore), which inherits it and opens the
    key store for it."""

    fleet_key: WrappingKey | None
    previous_fleet_key: WrappingKey | None
    _open: Callable[[], tuple[sqlite3.Connection, WrappingKey]]

    def keys_to_upload(self) -> list[SharedDataKey]:
        """Data keys not yet in the central registry, wrapped by the fleet key."""
        fleet = self._require_fleet()
        conn, master = self._open()
        rows = conn.execute(
            "SELECT tenant_id, key_id, wrapped, created_at FROM data_keys WHERE uploaded = 0"
        ).fetchall()
        return [
            SharedDataKey(t, k, fleet.wrap(t, k, master.unwrap(t, k, w)), fleet.key_id, created)
            for t, k, w, created in rows
        ]

    def mark_uploaded(self, keys: Iterable[SharedDataKey]) -> None:
        conn, _ = self._open()
        with sqlite.transaction(conn):
            conn.executemany(
                "UPDATE data_keys SET uploaded = 1 WHERE tenant_id = ? AND key_id = ?",
                [(k.tenant_id, k.key_id) for k in keys],
            )

    def add_shared(self, keys: Iterable[SharedDataKey]) -> int:
        """Store data keys received from the central registry; how many were new here.
        Keys of deleted tenants, and keys wrapped by neither the fleet key nor the previous
        one, are not stored."""
        fleets = {f.key_id: f for f in (self.previous_fleet_key, self._require_fleet()) if f}
        conn, master = self._open()
        added = 0
        with sqlite.transaction(conn):
            for k in keys:
                fleet = fleets.get(k.fleet_key_id)
                if fleet is None or is_deleted(conn, k.tenant_id):
                    continue
                data_key = fleet.unwrap(k.tenant_id, k.key_id, k.wrapped)
                added += conn.execute(
                    "INSERT INTO data_keys (tenant_id, key_id, wrapped, master_key_id,"
                    " created_at, uploaded) VALUES (?, ?, ?, ?, ?, 1)"
                    " ON CONFLICT (tenant_id, key_id) DO NOTHING",
                    (
                        k.tenant_id,
                        k.key_id,
                        master.wrap(k.tenant_id, k.key_id, data_key),
                        master.key_id,
                        k.created_at,
                    ),
                ).rowcount
        return added

    def deletions_to_upload(self) -> list[tuple[str, int]]:
        conn, _ = self._open()
        rows = conn.execute(
            "SELECT tenant_id, deleted_at FROM deleted_tenants WHERE uploaded = 0"
        ).fetchall()
        return [(str(t), int(at)) for t, at in rows]

    def mark_deletions_uploaded(self, tenant_ids: Iterable[str]) -> None:
        conn, _ = self._open()
        with sqlite.transaction(conn):
            conn.executemany(
                "UPDATE deleted_tenants SET uploaded = 1 WHERE tenant_id = ?",
                [(t,) for t in tenant_ids],
            )

    def checkpoint(self, name: str) -> str | None:
        conn, _ = self._open()
        return meta(conn, f"sync:{name}")

    def set_checkpoint(self, name: str, value: str) -> None:
        conn, _ = self._open()
        with sqlite.transaction(conn):
            set_meta(conn, f"sync:{name}", value)

    def _require_fleet(self) -> WrappingKey:
        if self.fleet_key is None:
            raise KeyMaterialError("no fleet key (encryption.fleet_key_file) is configured")
        return self.fleet_key
