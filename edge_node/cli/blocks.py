"""`edge-node blocks list` and `blocks lift IP`: the abuse blocks in node.sqlite, as JSON.

They work while the daemon runs: the daemon notices a lift within
abuse.lift_check_interval_seconds (edge_node.abuse.blocks).
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from typing import Any

from edge_node.abuse.blocks import BlockStore, canonical_ip
from edge_node.cli.support import emit, require_data_dir
from edge_node.config import Config
from edge_node.errors import RegistryError
from edge_node.node_database import open_node_database


def add_block_commands(commands: Any) -> None:
    """Register the `blocks` command on the CLI's subparsers."""
    blocks = commands.add_parser("blocks", help="client IPs blocked for abuse").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    blocks.add_parser("list", help="blocks in force: IP, reason, until when").set_defaults(
        handler=blocks_list
    )
    lift = blocks.add_parser("lift", help="lift the block of an IP now")
    lift.add_argument("ip", metavar="IP", help="the blocked client address (IPv4 or IPv6)")
    lift.set_defaults(handler=blocks_lift)


def blocks_list(config: Config, args: argparse.Namespace) -> int:
    require_data_dir(config)
    with _open_node_database(config) as conn:
        return emit([block.to_json() for block in BlockStore(conn).active()])


def blocks_lift(config: Config, args: argparse.Namespace) -> int:
    ip = canonical_ip(args.ip)
    with _open_node_database(config) as conn:
        lifted = BlockStore(conn).lift(ip)
    if lifted is None:
        raise RegistryError(f"{ip} is not blocked")
    return emit({"lifted": lifted.to_json()})


def _open_node_database(config: Config) -> contextlib.closing[sqlite3.Connection]:
    """node.sqlite for one command, closed however the command ends."""
    return contextlib.closing(
        open_node_database(config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms)
    )
