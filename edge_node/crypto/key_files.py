"""Wrapping keys and their files: the node master key and the fleet key.

A wrapping key is 32 random bytes that wrap tenant data keys (AES-256-GCM, tenant and key
id as associated data: edge_node/crypto/keystore.py). On disk it is one line of base64 in a file of
mode 0600. A new key file is written and synced in an unnamed file, then linked in, which
never overwrites: another process finds the file whole or not at all, and a crash leaves
nothing. A retired key file is overwritten with zeros before it is removed.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.crypto.sealing import DATA_KEY_BYTES, NONCE_BYTES
from edge_node.durable import fsync_path
from edge_node.errors import ConfigError, KeyMaterialError
from edge_node.secrets import SecretFile

MASTER_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class WrappingKey:
    """A key that wraps data keys (a node master key or the fleet key); `key_id` names it
    without revealing it."""

    key: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"edge-node wrapping key\x00" + self.key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"WrappingKey({self.key_id})"

    def wrap(self, tenant_id: str, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, data_key, _wrap_aad(tenant_id, key_id))

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
        try:
            key = AESGCM(self.key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(tenant_id, key_id)
            )
        except InvalidTag:
            raise KeyMaterialError(
                f"data key {key_id} of tenant {tenant_id} does not unwrap with key {self.key_id}"
            ) from None
        if len(key) != DATA_KEY_BYTES:
            raise KeyMaterialError(f"data key {key_id} of tenant {tenant_id} is malformed")
        return key


def _wrap_aad(tenant_id: str, key_id: str) -> bytes:
    return f"edge-node data key\x00{tenant_id}\x00{key_id}".encode()


def read_key_file(path: Path, name: str) -> WrappingKey:
    """The 32-byte key in `path` (base64, one line); ConfigError naming `name` otherwise."""
    text = SecretFile(path, name=name, check_interval=None).value()
    try:
        key = base64.b64decode(text, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"{name}: {path} must hold {MASTER_KEY_BYTES} bytes in base64")
    return WrappingKey(key)


def write_key_file(path: Path) -> WrappingKey:
    """Create `path` (mode 0600) holding a fresh random key, durably; FileExistsError if it
    exists. The key is written and synced in an unnamed file, then linked in (which never
    overwrites): another process sees the file whole or not at all, and a crash leaves
    nothing behind. Where the file system has no unnamed files, a named one beside it."""
    key = WrappingKey(os.urandom(MASTER_KEY_BYTES))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = base64.urlsafe_b64encode(key.key) + b"\n"
    if not _write_unnamed_then_link(path, content):
        _write_named_then_link(path, content)
    fsync_path(path.parent)
    return key


def _write_unnamed_then_link(path: Path, content: bytes) -> bool:
    """False when the file system (or a missing /proc) allows no unnamed file."""
    try:
        fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return False
        raise
    try:
        _write_all(fd, content)
        try:  # linkat(AT_SYMLINK_FOLLOW) through /proc names the unnamed file
            fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # no /proc mounted
            return False
        try:
            os.link(str(fd), path, src_dir_fd=fds, follow_symlinks=True)
        finally:
            os.close(fds)
    finally:
        os.close(fd)
    return True


def _write_named_then_link(path: Path, content: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            _write_all(fd, content)
        finally:
            os.close(fd)
        os.link(scratch, path)
    finally:
        scratch.unlink()


def _write_all(fd: int, content: bytes) -> None:
    written = 0
    while written < len(content):
        written += os.write(fd, content[written:])
    os.fsync(fd)


def retire_key_file(path: Path) -> None:
    """Overwrite a key file with zeros, then remove it."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"\x00" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
    fsync_path(path.parent)
