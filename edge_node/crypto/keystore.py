"""Tenant data keys, wrapped by the node master key, in their own file: data_dir/keys/.

Every tenant's comments are sealed (`edge_node.crypto.sealing`) under data keys of that tenant. A
data key is stored only wrapped: AES-256-GCM under the node master key, with the tenant id
and key id as associated data, in `keys/data-keys.sqlite`. The master key lives in a file
(`encryption.master_key_file`, or a systemd credential), never in the configuration; with
none configured the node creates `keys/master.key` (mode 0600) on first use, so a standalone
node needs nothing set up.

The key store is a file of its own so that backups of node.sqlite and tenants/ never carry
key material: deleting a tenant deletes its data keys here (crypto-shredding, with SQLite's
secure_delete and a truncating WAL checkpoint), and from then on no copy of its comments,
local, central or in any backup of data files, can be opened (docs/security.md).

Master-key rotation re-wraps the data keys in one transaction; no rating row is rewritten.
A running daemon notices another process's commits here (`PRAGMA data_version`, checked at
most every 50 ms) and drops the keys and opened comments it holds in memory, so a tenant
shredded from the command line is unreadable to it within that time.

The file's tables are declared in edge_node.crypto.schema; the keys' replication with the
central registry is edge_node.crypto.replication, which `Keyring` inherits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.crypto import schema
from edge_node.crypto.key_files import (
    WrappingKey,
    read_key_file,
    retire_key_file,
    write_key_file,
)
from edge_node.crypto.replication import KeyReplication
from edge_node.crypto.sealing import TenantSealer, new_data_key
from edge_node.durable import fsync_path
from edge_node.errors import ConfigError, KeyMaterialError

if TYPE_CHECKING:
    from edge_node.config import Config

KEYS_DIRECTORY = "keys"
KEY_STORE_FILE = "data-keys.sqlite"
DEFAULT_MASTER_KEY_FILE = "master.key"
MASTER_LOCK_FILE = ".master.lock"  # flock()ed while the default master key file changes
NEXT_SUFFIX = ".next"
# How soon a shred or rotation by another process reaches a running node's memory (its
# registry rows are gone at once, so requests for the tenant are refused meanwhile).
REFRESH_INTERVAL_SECONDS = 0.05


class Keyring(KeyReplication):
    """The node's data keys: opened on first use, unwrapped keys kept in memory per tenant."""

    def __init__(
        self,
        directory: Path,
        *,
        master_key_file: Path | None = None,
        fleet_key: WrappingKey | None = None,
        previous_fleet_key: WrappingKey | None = None,
        busy_timeout_ms: int = 5000,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
    ) -> None:
        self.directory = directory
        self._refresh_interval = refresh_interval
        self._next_refresh = 0.0
        self.master_key_file = master_key_file or directory / DEFAULT_MASTER_KEY_FILE
        self.default_master = master_key_file is None
        self.fleet_key = fleet_key
        # During a fleet-key rotation: keys wrapped by it still unwrap; uploads use fleet_key.
        self.previous_fleet_key = previous_fleet_key
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._master: WrappingKey | None = None
        self._data_version = -1
        self._current: dict[str, tuple[str, AESGCM]] = {}
        # Per tenant: sealed-comment header -> key. Cleared in place, so sealers see it.
        self._ciphers: dict[str, dict[bytes, AESGCM]] = {}
        self._opened: dict[tuple[str, str, bytes], str] = {}  # shared by every tenant's sealer
        self.forgotten = 0  # how often keys and opened comments were dropped from memory

    @property
    def path(self) -> Path:
        return self.directory / KEY_STORE_FILE

    def close(self) -> None:
        """Close the key store and forget every key held in memory (reopened on next use)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._master = None
        self._forget()

    def sealer(self, tenant_id: str) -> TenantSealer:
        return TenantSealer(
            tenant_id,
            lambda: self.current(tenant_id),
            lambda key_id: self.cipher(tenant_id, key_id),
            refresh=self.refresh,
            generation=lambda: self.forgotten,
            ciphers=self._ciphers.setdefault(tenant_id, {}),
            opened=self._opened,
        )

    def current(self, tenant_id: str) -> tuple[str, AESGCM]:
        """The key this node seals the tenant's new comments with, created on first need."""
        held = self._current.get(tenant_id)
        if held is not None:
            return held
        conn, master = self._open()
        with sqlite.transaction(conn):
            if schema.is_deleted(conn, tenant_id):
                raise KeyMaterialError(f"tenant {tenant_id} was deleted: its keys are destroyed")
            row = conn.execute(
                "SELECT key_id, wrapped FROM data_keys WHERE tenant_id = ?"
                " ORDER BY created_at, key_id LIMIT 1",
                (tenant_id,),
            ).fetchone()
            if row is None:
                key_id, key = new_data_key()
                conn.execute(
                    "INSERT INTO data_keys (tenant_id, key_id, wrapped, master_key_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    (
                        tenant_id,
                        key_id,
                        master.wrap(tenant_id, key_id, key),
                        master.key_id,
                        now_us(),
                    ),
                )
            else:
                key_id, key = row[0], master.unwrap(tenant_id, row[0], row[1])
        self._data_version = self._read_data_version(conn)
        held = (key_id, AESGCM(key))
        self._current[tenant_id] = held
        return held

    def cipher(self, tenant_id: str, key_id: str) -> AESGCM | None:
        """The tenant's data key `key_id`, or None when this node does not hold it."""
        conn, master = self._open()
        row = conn.execute(
            "SELECT wrapped FROM data_keys WHERE tenant_id = ? AND key_id = ?", (tenant_id, key_id)
        ).fetchone()
        # The sealer remembers a key found; a key missing now may arrive by sync later.
        return None if row is None else AESGCM(master.unwrap(tenant_id, key_id, row[0]))

    def shred(self, tenant_id: str) -> int:
        """Destroy every data key of the tenant and remember it was deleted; how many keys.

        secure_delete overwrites the freed content, and the TRUNCATE checkpoint copies it to
        the database file and empties the WAL, so no earlier version of a key row survives
        in either file."""
        conn, _ = self._open()
        with sqlite.transaction(conn):
            destroyed = conn.execute(
                "DELETE FROM data_keys WHERE tenant_id = ?", (tenant_id,)
            ).rowcount
            conn.execute(
                "INSERT INTO deleted_tenants (tenant_id, deleted_at) VALUES (?, ?)"
                " ON CONFLICT (tenant_id) DO NOTHING",
                (tenant_id, now_us()),
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._forget()
        return destroyed

    def is_deleted(self, tenant_id: str) -> bool:
        conn, _ = self._open()
        return schema.is_deleted(conn, tenant_id)

    def master_key_id(self) -> str:
        """The id of the master key in use (opening the key store, creating it if need be)."""
        return self._open()[1].key_id

    def rotate_master(self, new_master: WrappingKey) -> int:
        """Re-wrap every data key under `new_master`, in one transaction; how many keys."""
        conn, old_master = self._open()
        with sqlite.transaction(conn):
            rows = conn.execute("SELECT tenant_id, key_id, wrapped FROM data_keys").fetchall()
            conn.executemany(
                "UPDATE data_keys SET wrapped = ?, master_key_id = ?"
                " WHERE tenant_id = ? AND key_id = ?",
                [
                    (
                        new_master.wrap(t, k, old_master.unwrap(t, k, wrapped)),
                        new_master.key_id,
                        t,
                        k,
                    )
                    for t, k, wrapped in rows
                ],
            )
            schema.set_meta(conn, "master_key_id", new_master.key_id)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._master = new_master
        self._forget()
        return len(rows)

    def _open(self) -> tuple[sqlite3.Connection, WrappingKey]:
        if self._conn is not None and self._master is not None:
            return self._conn, self._master
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite.connect(self.path, synchronous="full", busy_timeout_ms=self._busy_timeout_ms)
        try:
            conn.execute("PRAGMA secure_delete = ON")
            sqlite.migrate(conn, schema.MIGRATIONS)
            master = self._load_master(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._master = conn, master
        self._data_version = self._read_data_version(conn)
        return conn, master

    @contextlib.contextmanager
    def master_key_lock(self) -> Iterator[None]:
        """Held while the default master key file is created, replaced or checked: by every
        process opening the key store (the workers of `serve --workers N` start together)
        and by `keys rotate-master`, so none retires a key another just installed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / MASTER_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load_master(self, conn: sqlite3.Connection) -> WrappingKey:
        path, name = self.master_key_file, "encryption.master_key_file"
        if not self.default_master:
            return self._check_master(conn, read_key_file(path, name))
        with self.master_key_lock():
            self._finish_default_rotation(conn)
            if not path.exists():
                write_key_file(path)
            return self._check_master(conn, read_key_file(path, name))

    def _check_master(self, conn: sqlite3.Connection, master: WrappingKey) -> WrappingKey:
        path = self.master_key_file
        with sqlite.transaction(conn):
            expected = schema.meta(conn, "master_key_id")
            if expected is None:
                schema.set_meta(conn, "master_key_id", master.key_id)
            elif expected != master.key_id:
                raise KeyMaterialError(
                    f"the data keys in {self.path} are wrapped by master key {expected}, but"
                    f" {path} holds master key {master.key_id}: configure the key that"
                    " `edge-node keys rotate-master` was last given"
                )
        return master

    def _finish_default_rotation(self, conn: sqlite3.Connection) -> None:
        """A rotation of the default key file that stopped after its commit: the store is
        wrapped by master.key.next, so that key replaces master.key now."""
        pending = self.master_key_file.with_name(self.master_key_file.name + NEXT_SUFFIX)
        if not pending.exists():
            return
        if (
            schema.meta(conn, "master_key_id")
            == read_key_file(pending, "the next master key").key_id
        ):
            if self.master_key_file.exists():
                retire_key_file(self.master_key_file)
            pending.rename(self.master_key_file)
            fsync_path(pending.parent)
        else:  # the rotation never committed: the new key wrapped nothing
            retire_key_file(pending)

    def refresh(self) -> None:
        """Drop keys held in memory when another connection committed to the key store (a
        shred or a rotation from the command line). Called per store operation; the PRAGMA
        costs ~10 us, more than sealing, so it runs at most once per refresh interval."""
        now = time.monotonic()
        if self._conn is None or now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_interval
        version = self._read_data_version(self._conn)
        if version != self._data_version:
            self._forget()
            self._data_version = version
            expected = schema.meta(self._conn, "master_key_id")
            if self._master is not None and expected != self._master.key_id:
                self.close()  # rotated by another process: reopening reports the mismatch

    def forget(self) -> None:
        """Forget every unwrapped key and opened comment held in memory (reloaded on use)."""
        self._forget()

    def _forget(self) -> None:
        self.forgotten += 1
        self._current.clear()
        for ciphers in self._ciphers.values():
            ciphers.clear()
        self._opened.clear()

    @staticmethod
    def _read_data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])


def open_keyring(config: Config) -> Keyring:
    """The keyring `config` describes: data_dir/keys, its master key file, the fleet keys."""
    encryption = config.encryption
    fleet, previous = fleet_keys(config)
    return Keyring(
        config.data_path / KEYS_DIRECTORY,
        master_key_file=Path(encryption.master_key_file) if encryption.master_key_file else None,
        fleet_key=fleet,
        previous_fleet_key=previous,
        busy_timeout_ms=config.storage.busy_timeout_ms,
    )


def fleet_keys(config: Config) -> tuple[WrappingKey | None, WrappingKey | None]:
    """The fleet key and the previous one `config` names (None: not configured); a previous
    key without a current one is refused, since nothing would wrap new uploads."""
    encryption = config.encryption
    names = ("encryption.fleet_key_file", "encryption.previous_fleet_key_file")
    paths = (encryption.fleet_key_file, encryption.previous_fleet_key_file)
    if paths[1] and not paths[0]:
        raise ConfigError(f"{names[1]} is set but {names[0]} is not: set the new fleet key")
    current, previous = (
        read_key_file(Path(path), name) if path else None
        for path, name in zip(paths, names, strict=True)
    )
    return current, previous
