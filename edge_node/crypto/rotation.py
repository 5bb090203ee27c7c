"""Rotating the node master key: every data key re-wrapped under a new one, no rating rewritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_node.crypto.key_files import read_key_file, retire_key_file, write_key_file
from edge_node.crypto.keystore import NEXT_SUFFIX, Keyring
from edge_node.errors import ConfigError


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
