"""What the `edge-node` command modules share: exit statuses, argument types, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from datetime import date
from typing import Any

import orjson

from edge_node.config import Config
from edge_node.errors import RegistryError
from edge_node.ids import is_uuid
from edge_node.node_database import open_node_database
from edge_node.tenants.registry import TenantRegistry

EXIT_UNBILLED = 1  # billing reconcile: usage served that is neither billed nor in flight
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # status: the daemon is not running (the code LSB status gives that case)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: PostgreSQL or Stripe could not be reached; retry later
EXIT_LOCKED = 75  # EX_TEMPFAIL: the other instance holds the data directory
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd and operators read it as "fix the config"


def iso_date(text: str) -> date:
    """argparse type: a day as YYYY-MM-DD, else a usage error (exit 2)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date as YYYY-MM-DD, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a positive integer, else a usage error (exit 2)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def require_uuid(tenant_id: str) -> None:
    if not is_uuid(tenant_id):
        raise RegistryError(f"{tenant_id!r} is not a tenant id (a UUID)")


def emit(document: Any) -> int:
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    return 0


def open_node(config: Config) -> contextlib.closing[sqlite3.Connection]:
    """node.sqlite for one command, closed however the command ends: the connection the
    stores that live in it (registry, ledger, shard state) are made on."""
    return contextlib.closing(
        open_node_database(config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms)
    )


def open_registry(config: Config) -> contextlib.closing[TenantRegistry]:
    """The node's tenant registry for one command: `with open_registry(config) as registry:`
    closes it however the command ends."""
    return contextlib.closing(
        TenantRegistry.open(config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms)
    )


def require_data_dir(config: Config) -> None:
    """For a command that only reads: a missing data directory is an error, never created."""
    if not config.data_path.is_dir():
        raise RegistryError(
            f"no data directory at {config.data_path.absolute()}: nothing to read there"
            " (name the node's with --data-dir or EDGE_NODE_DATA_DIR)"
        )
