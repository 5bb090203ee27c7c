"""`edge-node backup DIR`: a consistent copy of a node's data directory, taken while it serves.

What a backup holds, and in which order it is taken (docs/operations.md, "Backup and restore"):

1. the usage queues' segments are pinned by hard links and their cursors read
   (edge_node/queue/copying.py);
2. every database named by `databases_to_back_up` is copied with SQLite's online backup API
   in one step, which reads one committed state of the file while writers go on: node.sqlite
   (its billing ledger already knows every queue record the cursors read in 1 have consumed)
   and each tenant file;
3. segments the queue rolled over to meanwhile are pinned too, then the queues are copied;
4. the durable records kept beside the databases (`RECORD_FILES`) are copied;
5. `manifest.json` lists every file with its size and SHA-256, the versions and the node id.

Everything is written into a temporary sibling of DIR and renamed to DIR at the end, so a
directory named DIR is always a complete backup. Nothing else of the data directory is in
it: runtime and status files are rewritten by the daemon, and secrets (key files, a key
store) are deliberately never copied by this module.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson

from edge_node import __version__, sqlite
from edge_node.cli.progress import Progress
from edge_node.cli.runtime_file import process_alive
from edge_node.clock import format_us, now_us
from edge_node.config import Config
from edge_node.durable import fsync_path
from edge_node.errors import BackupError
from edge_node.queue import QueueError
from edge_node.queue.copying import QueueCopy

MANIFEST_NAME = "manifest.json"
BACKUP_FORMAT = 1
RECORD_FILES = ("sync-set-aside.jsonl", "stripe-catalog.json")
HOLDING_PREFIX = ".backup-pins-"
_CHUNK = 1 << 20


def databases_to_back_up(data_dir: Path) -> list[Path]:
    """The SQLite databases a backup holds, relative to data_dir: node.sqlite, the API keys'
    credits left (credits.sqlite) and every tenant file. Only the files named here are backed
    up; any other database kept in the data directory (a key store, for one) stays out of
    every backup."""
    names = [
        Path(name) for name in ("node.sqlite", "credits.sqlite") if (data_dir / name).is_file()
    ]
    tenants = sorted((data_dir / "tenants").glob("*.sqlite"))
    return names + [path.relative_to(data_dir) for path in tenants]


def back_up(config: Config, target: Path) -> dict[str, Any]:
    """Write a backup of the configured data directory into `target`; the manifest."""
    data_dir = config.data_path
    if not (data_dir / "node.sqlite").is_file():
        raise BackupError(f"{data_dir} holds no node.sqlite: nothing to back up")
    if target.exists():
        raise BackupError(f"{target} already exists: name a new directory")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
        manifest = _write_backup(config, partial)
        os.rename(partial, target)
        fsync_path(target.parent)
    except (OSError, sqlite3.Error, QueueError) as exc:
        raise BackupError(f"cannot write {target}: {exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return manifest


def _write_backup(config: Config, partial: Path) -> dict[str, Any]:
    data_dir = config.data_path
    files: list[dict[str, Any]] = []
    with _pinned_queues(data_dir) as queues:
        for queue in queues:
            queue.capture_cursors()
        databases = databases_to_back_up(data_dir)
        progress = Progress("copying databases", len(databases))
        for name in databases:
            copy_database(data_dir / name, partial / name)
            files.append(_describe(partial, name, "database"))
            progress.step(str(name))
        progress.done(f"{len(databases)} copied")
        for queue in queues:
            queue.pin_segments()
            for path in queue.write_to(partial / "queue" / queue.directory.name):
                files.append(_describe(partial, path.relative_to(partial), "queue"))
    for record in RECORD_FILES:
        if (data_dir / record).is_file():
            shutil.copyfile(data_dir / record, partial / record)
            files.append(_describe(partial, Path(record), "record"))
    manifest = _manifest(config, files)
    (partial / MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    sync_tree(partial)
    return manifest


@contextmanager
def _pinned_queues(data_dir: Path) -> Iterator[list[QueueCopy]]:
    """Every queue directory with its segments pinned, the pins removed afterwards."""
    _remove_abandoned_pins(data_dir)
    holding = data_dir / f"{HOLDING_PREFIX}{os.getpid()}"
    queues: list[QueueCopy] = []
    try:
        for directory in sorted((data_dir / "queue").glob("worker-*")):
            if directory.is_dir():
                queues.append(QueueCopy(directory, holding / directory.name))
                queues[-1].pin_segments()
        yield queues
    finally:
        shutil.rmtree(holding, ignore_errors=True)


def _remove_abandoned_pins(data_dir: Path) -> None:
    """Pins left by a backup that was killed hold disk space: drop them."""
    for holding in data_dir.glob(f"{HOLDING_PREFIX}*"):
        pid = holding.name.removeprefix(HOLDING_PREFIX)
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(holding, ignore_errors=True)


def copy_database(source: Path, target: Path) -> None:
    """One committed state of `source`, copied by the online backup API into a standalone
    file (rollback journal, no -wal beside it), synced to disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        sqlite.read_only(source) as reader,
        closing(sqlite3.connect(target, isolation_level=None)) as writer,
    ):
        reader.backup(writer)  # all pages in one step: a single read transaction
        writer.execute("PRAGMA journal_mode = DELETE")
        writer.execute("PRAGMA synchronous = FULL")


def _describe(root: Path, name: Path, kind: str) -> dict[str, Any]:
    path = root / name
    entry: dict[str, Any] = {
        "path": name.as_posix(),
        "kind": kind,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    if kind == "database":
        with sqlite.read_only(path) as conn:
            (entry["user_version"],) = conn.execute("PRAGMA user_version").fetchone()
    return entry


def _manifest(config: Config, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": BACKUP_FORMAT,
        "edge_node_version": __version__,
        "sqlite_version": sqlite3.sqlite_version,
        "python_version": platform.python_version(),
        "node_id": config.node_id,
        "source_data_dir": str(config.data_path.resolve()),
        "created_at": format_us(now_us()),
        "files": files,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    directories = []
    for top, _, names in os.walk(root):
        directories.append(Path(top))
        for name in names:
            fsync_path(Path(top) / name)
    for directory in reversed(directories):
        fsync_path(directory)
