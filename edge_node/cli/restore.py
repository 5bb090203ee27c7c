"""`edge-node restore DIR`: replace a stopped node's data directory with a verified backup.

1. The backup is verified first: its manifest is of a format this version reads, names only
   plain relative paths, and every file has the size and SHA-256 it lists (nothing is
   touched when one does not), every database passes `PRAGMA quick_check`.
2. The data directory is held: every queue directory's lock (edge_node/queue/locking.py) is
   taken, so a daemon serving it makes restore refuse, and none can start meanwhile.
3. The files are copied into a new sibling directory and synced, then swapped with the data
   directory in one rename (renameat2 RENAME_EXCHANGE where the kernel has it, else two
   renames). The previous data directory is kept beside it, named in the output, for the
   operator to delete once the restored node serves.

Backups never hold key material (`keys/`, docs/security.md: so that deleting a tenant
shreds its comments in every backup too). The node's own key store is copied from the data
directory into the restored one before the swap, so the restored comments stay readable; on
a new machine, `keys/` is restored apart from the backup (or the fleet key brings the data
keys down from the central registry).

Schema migrations run when the daemon next opens the restored files, as at any start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from edge_node import sqlite
from edge_node.cli.backup import BACKUP_FORMAT, MANIFEST_NAME, file_sha256, sync_tree
from edge_node.cli.progress import Progress
from edge_node.cli.runtime_file import RuntimeFile, process_alive
from edge_node.config import Config
from edge_node.crypto.keystore import KEYS_DIRECTORY
from edge_node.durable import fsync_path
from edge_node.errors import BackupError, DataDirectoryInUse
from edge_node.queue import QueueLocked
from edge_node.queue.locking import DirectoryLock

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def restore(config: Config, source: Path) -> dict[str, Any]:
    """Restore the backup in `source` as the configured data directory; what was done."""
    manifest = verify_backup(source)
    data_dir = config.data_path.resolve()
    with hold_data_directory(data_dir):
        staged = data_dir.with_name(f".{data_dir.name}.restoring-{os.getpid()}")
        try:
            _copy_files(source, staged, manifest)
            _carry_key_store(data_dir, staged)
            _match_owner(staged, data_dir)
            previous = _swap_in(staged, data_dir)
        except OSError as exc:
            raise BackupError(f"cannot restore into {data_dir}: {exc}") from exc
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return {
        "restored_from": str(source.resolve()),
        "data_dir": str(data_dir),
        "previous_data_dir": None if previous is None else str(previous),
        "files": len(manifest["files"]),
        "backup_created_at": manifest["created_at"],
        "backup_node_id": manifest["node_id"],
        "node_id": config.node_id,
    }


def verify_backup(source: Path) -> dict[str, Any]:
    """The manifest of a complete, intact backup; BackupError naming the first fault."""
    try:
        manifest: dict[str, Any] = orjson.loads((source / MANIFEST_NAME).read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST_NAME}: not a complete backup") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BackupError(f"cannot read {source / MANIFEST_NAME}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupError(f"backup format {found!r} is not {BACKUP_FORMAT}")
    try:
        for entry in manifest["files"]:
            _verify_file(source, entry)
    except (KeyError, TypeError) as exc:
        raise BackupError(f"{source / MANIFEST_NAME} is malformed: {exc!r}") from None
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot verify {source}: {exc}") from None
    return manifest


def _verify_file(source: Path, entry: dict[str, Any]) -> None:
    name = PurePosixPath(entry["path"])
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise BackupError(f"the manifest names {entry['path']!r}, outside the backup")
    path = source / name
    if not path.is_file():
        raise BackupError(f"{entry['path']} is listed in the manifest but missing")
    if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        raise BackupError(f"{entry['path']} does not match its checksum in the manifest")
    if entry["kind"] == "database":
        with sqlite.read_only(path) as conn:
            (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"{entry['path']} fails SQLite's quick_check: {verdict}")


@contextmanager
def hold_data_directory(data_dir: Path) -> Iterator[None]:
    """Hold every lock a serving daemon holds on `data_dir`; BackupError if one is taken."""
    record = RuntimeFile(data_dir).read()
    if record is not None and record.pid != os.getpid() and process_alive(record.pid):
        raise DataDirectoryInUse(
            f"a daemon (pid {record.pid}) is serving {data_dir}: stop it first"
        )
    with ExitStack() as locks:
        for directory in sorted((data_dir / "queue").glob("worker-*")):
            try:
                locks.enter_context(_locked(directory))
            except QueueLocked as exc:
                raise DataDirectoryInUse(
                    f"a daemon is serving {data_dir} ({exc}): stop it first"
                ) from None
        yield


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    lock = DirectoryLock.acquire(directory)
    try:
        yield
    finally:
        lock.release()


def _copy_files(source: Path, staged: Path, manifest: dict[str, Any]) -> None:
    """Copy every listed file, checking each copy's checksum, and sync the whole tree."""
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    progress = Progress("copying and checking files", len(manifest["files"]))
    for entry in manifest["files"]:
        target = staged / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / entry["path"], target)
        if file_sha256(target) != entry["sha256"]:
            raise BackupError(f"{entry['path']} changed while it was being restored")
        progress.step(entry["path"])
    sync_tree(staged)
    progress.done(f"{len(manifest['files'])} restored")


def _carry_key_store(data_dir: Path, staged: Path) -> None:
    """Copy the data directory's key store into the restored one (no daemon holds it now)."""
    keys = data_dir / KEYS_DIRECTORY
    if keys.is_dir():
        shutil.copytree(keys, staged / KEYS_DIRECTORY)
        sync_tree(staged / KEYS_DIRECTORY)


def _match_owner(staged: Path, data_dir: Path) -> None:
    """Run as root for a service user, give the files the data directory's owner."""
    if os.geteuid() != 0 or not data_dir.exists():
        return
    owner = data_dir.stat()
    os.chmod(staged, owner.st_mode & 0o7777)
    for directory, names, files in os.walk(staged):
        os.chown(directory, owner.st_uid, owner.st_gid)
        for name in names + files:
            os.chown(Path(directory) / name, owner.st_uid, owner.st_gid)


def _swap_in(staged: Path, data_dir: Path) -> Path | None:
    """Put `staged` where `data_dir` is; the path the previous data directory now has."""
    if not data_dir.exists():
        os.rename(staged, data_dir)
        fsync_path(data_dir.parent)
        return None
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    previous = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
    if _exchange(staged, data_dir):
        os.rename(staged, previous)
    else:
        os.rename(data_dir, previous)
        os.rename(staged, data_dir)
    fsync_path(data_dir.parent)
    return previous


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(2); False where the kernel or libc cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this file system cannot
        return False
    raise OSError(code, os.strerror(code), str(b))
