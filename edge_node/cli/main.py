"""The `edge-node` command: serve the API and manage tenants and keys, printing JSON.

This module is the entry point: the top-level options, `serve`, and the mapping of errors
to exit statuses. The other command groups register themselves from their own modules
(`*_commands.py`); their handlers import heavy modules inside, to keep start-up short.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edge_node import __version__
from edge_node.cli.blocks import add_block_commands
from edge_node.cli.daemon import run, serve
from edge_node.cli.generations import worker_command
from edge_node.cli.health_socket import WorkerSockets
from edge_node.cli.operations import add_operations_commands
from edge_node.cli.outside import add_sync_commands
from edge_node.cli.queues import add_queue_commands
from edge_node.cli.startup import describe_failure
from edge_node.cli.supervisor import Supervisor, run_supervisor
from edge_node.cli.support import (
    EXIT_CONFIG,
    EXIT_LOCKED,
    EXIT_UNAVAILABLE,
    positive_int,
)
from edge_node.cli.tenants import add_tenant_commands
from edge_node.config import Config, load_config, service_environment
from edge_node.descriptors import DescriptorLimitTooLow, raise_open_files_limit
from edge_node.errors import (
    ConfigError,
    KeyMaterialError,
    RegistryError,
    SchemaTooNew,
    SyncError,
    TransientSyncError,
)
from edge_node.logs import configure_logging
from edge_node.queue import QueueLocked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-node", description="Self-hosted edge daemon for metered, multi-tenant APIs."
    )
    parser.add_argument("--version", action="version", version=f"edge-node {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="data directory (default ./var or EDGE_NODE_DATA_DIR)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run the daemon")
    serve_cmd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve_cmd.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="serving processes on the one port under a supervisor (default 1: one process)",
    )
    serve_cmd.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--buckets-fd", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    # The supervisor's sockets on the host's other addresses: an option of its own, which a
    # worker of a release that took one socket refuses (an upgrade to it then rolls back).
    serve_cmd.add_argument(
        "--also-listen-fd", type=int, action="append", default=[], help=argparse.SUPPRESS
    )
    serve_cmd.add_argument("--health-socket", help=argparse.SUPPRESS)
    serve_cmd.set_defaults(handler=_serve)

    add_tenant_commands(commands)
    add_queue_commands(commands)
    add_sync_commands(commands)
    add_block_commands(commands)
    add_operations_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides=_overrides(args))
        return _run(config, args)
    except ConfigError as exc:
        print(f"edge-node: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RegistryError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 1
    except KeyMaterialError as exc:
        print(f"edge-node: key material: {exc}", file=sys.stderr)
        return 1
    except QueueLocked as exc:
        print(
            f"edge-node: another edge-node is already serving from this data directory"
            f" ({exc}); stop it first or give this one its own --data-dir",
            file=sys.stderr,
        )
        return EXIT_LOCKED
    except SyncError as exc:
        print(f"edge-node: central PostgreSQL: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(exc, TransientSyncError) else 1


def _run(config: Config, args: argparse.Namespace) -> int:
    """The command's handler; a failure of the machine's making (a taken port, a read-only
    directory, a full disk) is one line and its sysexits status (edge_node.cli.startup)."""
    handler: Callable[[Config, argparse.Namespace], int] = args.handler
    try:
        return handler(config, args)
    except (OSError, sqlite3.Error, DescriptorLimitTooLow, SchemaTooNew) as exc:
        failure = describe_failure(exc, str(config.data_path))
        if failure is None:
            raise
        line, status = failure
        print(line, file=sys.stderr)
        return status


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as command-line flags, by dotted key."""
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    flags = (("host", "server.host"), ("port", "server.port"), ("workers", "workers.count"))
    for flag, key in flags:
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    return overrides


def _listen_fds(args: argparse.Namespace) -> tuple[int, ...]:
    """The listening sockets a supervisor handed this worker, the first address's first."""
    if args.listen_fd is None:
        return ()
    return (args.listen_fd, *args.also_listen_fd)


def _serve(config: Config, args: argparse.Namespace) -> int:
    configure_logging(config.logging.level)
    raise_open_files_limit()
    service = service_environment()
    overrides = _overrides(args)

    def reload_config() -> Config:
        return load_config(args.config, overrides=overrides)

    if args.worker_index is not None:
        run(
            serve(
                config,
                announce=lambda line: None,  # the supervisor announces the node
                service=service,
                reload_config=reload_config,
                worker=args.worker_index,
                buckets_fd=args.buckets_fd,
                sockets=WorkerSockets(_listen_fds(args), args.health_socket),
            )
        )
        return 0
    if config.workers.count > 1:
        return run_supervisor(
            Supervisor(
                config,
                worker_command(args.config, args.data_dir),
                service=service,
            )
        )
    run(serve(config, service=service, reload_config=reload_config))
    return 0
