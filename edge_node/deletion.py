"""Operator actions on key material: rotating the master key, deleting a tenant for good.

Deleting a tenant is crypto-shredding: its data keys are destroyed first (the point of no
return: from then on no copy of its comments opens, wherever it is), then its rating file
and its registry rows are removed. Each step is idempotent, so a deletion interrupted by a
crash is finished by running it again; the deletion is remembered in the key store, and the
sync worker carries it to the central registry and from there to every other node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_node.crypto.keystore import (
    NEXT_SUFFIX,
    Keyring,
    read_key_file,
    retire_key_file,
    write_key_file,
)
from edge_node.errors import ConfigError
from edge_node.rating.store import TenantStores
from edge_node.tenants.registry import TenantRegistry, delete_tenant_rows


def delete_tenant(registry: TenantRegistry, stores: TenantStores, tenant_id: str) -> dict[str, Any]:
    """Shred the tenant's data keys, then remove its rating file and registry rows."""
    keys_destroyed = stores.keyring.shred(tenant_id)
    file_removed = stores.drop(tenant_id)
    registry_removed = delete_tenant_rows(registry.connection, tenant_id)
    return {
        "tenant_id": tenant_id,
        "data_keys_destroyed": keys_destroyed,
        "rating_file_removed": file_removed,
        "registry_rows_removed": registry_removed,
    }


def rotate_master(keyring: Keyring, new_key_file: Path | None) -> dict[str, Any]:
    """Re-wrap every data key under a new master key; no rating row is rewritten.

    With the default key file (data_dir/keys/master.key) the new key is generated beside it,
    the data keys are re-wrapped in one transaction, and the new key replaces the old file,
    which is overwritten before it is removed; a crash in between is finished at the next
    open. With a configured key file, `new_key_file` is used (generated when it does not
    exist); the operator then points encryption.master_key_file at it and removes the old one.
    """
    old_id = keyring.master_key_id()  # opens the store, finishing any interrupted rotation
    if keyring.default_master and new_key_file is None:
        current = keyring.master_key_file
        pending = current.with_name(current.name + NEXT_SUFFIX)
        with keyring.master_key_lock():  # a worker starting now waits, then sees it done
            new_master = write_key_file(pending)
            rewrapped = keyring.rotate_master(new_master)
            retire_key_file(current)
            pending.rename(current)
        return _report(old_id, new_master.key_id, rewrapped, current, retired=True)
    if new_key_file is None:
        raise ConfigError(
            "encryption.master_key_file is set: give the new key's file with --new-key-file"
        )
    if new_key_file.exists():
        new_master = read_key_file(new_key_file, "--new-key-file")
    else:
        new_master = write_key_file(new_key_file)
    if new_master.key_id == old_id:
        raise ConfigError("--new-key-file holds the master key already in use")
    rewrapped = keyring.rotate_master(new_master)
    return _report(old_id, new_master.key_id, rewrapped, new_key_file, retired=False)


def _report(
    old_id: str, new_id: str, rewrapped: int, path: Path, *, retired: bool
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "previous_master_key_id": old_id,
        "master_key_id": new_id,
        "data_keys_rewrapped": rewrapped,
        "master_key_file": str(path),
    }
    if not retired:
        document["next_step"] = (
            "set encryption.master_key_file to master_key_file, then remove the old key file"
        )
    return document
