"""`edge-node status`, `backup DIR` and `restore DIR`: operating a node from outside."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from edge_node.cli.support import EXIT_LOCKED, EXIT_NOT_RUNNING, emit
from edge_node.config import Config


def add_operations_commands(commands: Any) -> None:
    """`status`, `backup DIR` and `restore DIR` (edge_node/cli/status.py,
    edge_node/cli/backup.py)."""
    status = commands.add_parser(
        "status", help="daemon, tenants, queue, sync with PostgreSQL and Stripe, set-aside usage"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status)
    backup = commands.add_parser(
        "backup", help="a consistent copy of every database, the queue and a manifest"
    )
    backup.add_argument("directory", metavar="DIR", help="where to write it (must not exist)")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser(
        "restore", help="replace the data directory with a backup (the daemon must be stopped)"
    )
    restore.add_argument("directory", metavar="DIR", help="a directory written by `backup`")
    restore.set_defaults(handler=_restore)
    upgrade = commands.add_parser(
        "upgrade",
        help="replace the serving workers by new ones running the code installed now, with no"
        " connection dropped; rolls back by itself if they do not become ready (SIGUSR2)",
    )
    upgrade.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the outcome (default: workers.upgrade_timeout_seconds plus"
        " the probation and the drain, and a margin)",
    )
    upgrade.set_defaults(handler=_upgrade)


def _status(config: Config, args: argparse.Namespace) -> int:
    from edge_node.cli.status import collect_status  # noqa: PLC0415
    from edge_node.cli.status_table import render_table  # noqa: PLC0415

    if not config.data_path.is_dir():
        print(f"edge-node: no data directory at {config.data_path}", file=sys.stderr)
        return 1
    try:
        document = collect_status(config, time.time_ns() // 1000)
    except (OSError, sqlite3.Error) as exc:
        print(
            f"edge-node: cannot read {config.data_path}: {exc} (run as root or as the"
            " service's user)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        emit(document)
    else:
        sys.stdout.write(render_table(document))
    return 0 if document["daemon"]["state"] == "running" else EXIT_NOT_RUNNING


def _backup(config: Config, args: argparse.Namespace) -> int:
    from edge_node.cli.backup import back_up  # noqa: PLC0415
    from edge_node.errors import BackupError  # noqa: PLC0415

    try:
        manifest = back_up(config, Path(args.directory))
    except BackupError as exc:
        print(f"edge-node: backup failed: {exc}", file=sys.stderr)
        return 1
    files = manifest["files"]
    return emit(
        {
            "backup": str(Path(args.directory).resolve()),
            "node_id": manifest["node_id"],
            "created_at": manifest["created_at"],
            "databases": sum(entry["kind"] == "database" for entry in files),
            "files": len(files),
            "bytes": sum(entry["bytes"] for entry in files),
        }
    )


def _restore(config: Config, args: argparse.Namespace) -> int:
    from edge_node.cli.restore import restore  # noqa: PLC0415
    from edge_node.errors import BackupError, DataDirectoryInUse  # noqa: PLC0415

    try:
        document = restore(config, Path(args.directory))
    except DataDirectoryInUse as exc:
        print(f"edge-node: restore refused: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except BackupError as exc:
        print(f"edge-node: restore failed: {exc}", file=sys.stderr)
        return 1
    if document["backup_node_id"] != document["node_id"]:
        print(
            f"edge-node: the backup is of node {document['backup_node_id']!r} but this"
            f" configuration's node_id is {document['node_id']!r}: set node_id ="
            f" {document['backup_node_id']!r} so usage is billed under the same identifiers",
            file=sys.stderr,
        )
    return emit(document)


def _upgrade(config: Config, args: argparse.Namespace) -> int:
    from edge_node.cli.runtime_file import RuntimeFile, process_alive  # noqa: PLC0415
    from edge_node.cli.upgrade_record import COMPLETED, request_upgrade, under_way  # noqa: PLC0415

    running = RuntimeFile(config.data_path).read()
    if running is None or not process_alive(running.pid):
        print(f"edge-node: no node is serving from {config.data_path}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if (busy := under_way(config.data_path, running.started_at)) is not None:
        started = busy.to_json()["started_at"]
        print(f"edge-node: an upgrade is already under way (started {started})", file=sys.stderr)
        return 1
    workers = config.workers
    wait = args.wait or (
        workers.upgrade_timeout_seconds
        + workers.upgrade_probation_seconds
        + config.server.shutdown_grace_seconds
        + 30
    )
    record = request_upgrade(config.data_path, running.pid, wait)
    if record is None:
        print(
            f"edge-node: the upgrade had not ended after {wait:g} s; `edge-node status` tells"
            " how it ends",
            file=sys.stderr,
        )
        return 1
    emit(record.to_json())
    if record.state != COMPLETED:
        print(f"edge-node: upgrade {record.state}: {record.reason}", file=sys.stderr)
        return 1
    return 0
