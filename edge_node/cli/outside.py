"""`edge-node central`, `sync`, `stripe` and `billing`: the commands about PostgreSQL and Stripe.

Each handler imports what it needs from the `sync` package itself, so that the other
commands (and `serve`) never load it, the PostgreSQL driver or the Stripe SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from typing import Any

from edge_node.cli.progress import Progress
from edge_node.cli.reconcile_table import render_statements
from edge_node.cli.support import (
    EXIT_UNAVAILABLE,
    EXIT_UNBILLED,
    emit,
    iso_date,
    open_node,
    require_uuid,
)
from edge_node.config import Config
from edge_node.errors import ConfigError, SyncError, TransientSyncError


def add_sync_commands(commands: Any) -> None:
    """Register `central`, `sync`, `stripe` and `billing` on the CLI's subparsers."""
    central = commands.add_parser("central", help="the central PostgreSQL").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    migrate = central.add_parser("migrate", help="create or upgrade the central schema")
    migrate.add_argument(
        "--dsn", help="postgresql:// URL (default: every shard in central.dsns)", metavar="DSN"
    )
    migrate.set_defaults(handler=_central_migrate)
    _add_bind_role_command(central)

    sync = commands.add_parser("sync", help="sync with the central PostgreSQL").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sync.add_parser(
        "status", help="per shard: last success, last error, failures, lag (from the daemon)"
    ).set_defaults(handler=_sync_status)
    reset = sync.add_parser(
        "reset-checkpoints",
        help="download everything again from the central database (after a failover to an"
        " asynchronous standby or a point-in-time restore)",
    )
    reset.add_argument("--shard", type=int, help="only this shard (default: every shard)")
    reset.set_defaults(handler=_sync_reset_checkpoints)

    stripe = commands.add_parser("stripe", help="Stripe billing").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    stripe.add_parser(
        "bootstrap",
        help="create (once) the billing meter, product and plan prices; write the catalog file",
    ).set_defaults(handler=_stripe_bootstrap)

    billing = commands.add_parser("billing", help="usage billed to Stripe").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    reconcile = billing.add_parser(
        "reconcile",
        help="per tenant and billing period: usage served, queued, sent, confirmed,"
        " invoiced (read from Stripe), carried forward, set aside and the difference;"
        " exits 1 on any unexplained difference or usage set aside",
    )
    reconcile.add_argument("--tenant", metavar="ID", help="one tenant only")
    reconcile.add_argument(
        "--since", type=iso_date, metavar="DATE", help="from this UTC day on (YYYY-MM-DD)"
    )
    reconcile.add_argument("--json", action="store_true", help="print the JSON document")
    reconcile.set_defaults(handler=_billing_reconcile)


def _add_bind_role_command(central: Any) -> None:
    bind = central.add_parser(
        "bind-role",
        help="bind a database role to one tenant, so row-level security scopes it by itself",
    )
    bind.add_argument("role", metavar="ROLE", help="the PostgreSQL role to bind")
    scope = bind.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "tenant_id", nargs="?", metavar="TENANT_ID", help="the one tenant the role may see"
    )
    scope.add_argument(
        "--scoped-by-setting",
        action="store_true",
        help="instead: a trusted application role scoping itself by edge_node.tenant_id",
    )
    bind.add_argument(
        "--dsn", help="postgresql:// URL (default: every shard in central.dsns)", metavar="DSN"
    )
    bind.set_defaults(handler=_central_bind_role)


def _central_migrate(config: Config, args: argparse.Namespace) -> int:
    # Imported here: only commands that talk to PostgreSQL load the sync package and its driver.
    from sync.central.schema import migrate_dsns  # noqa: PLC0415

    dsns = (args.dsn,) if args.dsn else config.central.dsns
    if not dsns:
        raise ConfigError("no central PostgreSQL: pass --dsn or set central.dsns")
    return emit(asyncio.run(migrate_dsns(dsns)))


def _central_bind_role(config: Config, args: argparse.Namespace) -> int:
    from sync.central.roles import bind_role_dsns  # noqa: PLC0415

    if args.tenant_id is not None:
        require_uuid(args.tenant_id)
    dsns = (args.dsn,) if args.dsn else config.central.dsns
    if not dsns:
        raise ConfigError("no central PostgreSQL: pass --dsn or set central.dsns")
    return emit(asyncio.run(bind_role_dsns(dsns, args.role, args.tenant_id)))


def _sync_status(config: Config, args: argparse.Namespace) -> int:
    # The running daemon writes the file; sync.status does not load the PostgreSQL driver.
    from sync.status import read_status_file  # noqa: PLC0415

    document = read_status_file(config.data_path)
    if document is None:
        print(
            f"edge-node: no sync status in {config.data_path}: the daemon writes it while it"
            " serves with central.dsns set",
            file=sys.stderr,
        )
        return 1
    return emit(document)


def _sync_reset_checkpoints(config: Config, args: argparse.Namespace) -> int:
    from sync.replication.shard_state import reset_command  # noqa: PLC0415

    with open_node(config) as node_database:
        return emit(reset_command(node_database, len(config.central.dsns), args.shard))


def _stripe_bootstrap(config: Config, args: argparse.Namespace) -> int:
    # Imported here: only Stripe commands load the Stripe SDK.
    from sync.billing.commands import bootstrap  # noqa: PLC0415

    try:
        document = asyncio.run(bootstrap(config))
    except SyncError as exc:
        print(f"edge-node: Stripe: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(exc, TransientSyncError) else 1
    emit(document)
    grace = document["invoice_grace"]
    if grace["state"] == "differs":
        print(
            f"edge-node: the account's invoice grace is {grace['observed_seconds']} s (draft"
            f" {grace['observed_on']}), not {grace['configured_seconds']} s: {grace['detail']}",
            file=sys.stderr,
        )
        return 1
    if grace["state"] == "unverified":
        print(f"edge-node: invoice grace not verified: {grace['detail']}", file=sys.stderr)
    return 0


def _billing_reconcile(config: Config, args: argparse.Namespace) -> int:
    # Imported here; it reads node.sqlite and the queue read-only, and Stripe's invoices
    # through the adapter when Stripe is configured.
    from sync.billing.reconcile import reconcile  # noqa: PLC0415

    if args.tenant is not None:
        require_uuid(args.tenant)
    progress = Progress("reconciling", numbered=False)
    try:
        invoices = _invoices(config, args.tenant, progress) if config.stripe.enabled else None
        report = reconcile(
            config.data_path,
            tenant_id=args.tenant,
            since=args.since,
            on_step=lambda part: progress.step(f"reading {part}"),
            invoices=invoices,
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"edge-node: cannot reconcile {config.data_path}: {exc}", file=sys.stderr)
        return 1
    except SyncError as exc:
        print(f"edge-node: Stripe: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(exc, TransientSyncError) else 1
    progress.done(f"{len(report.periods.statements)} tenant period(s)")
    document = report.to_json()
    if args.json:
        emit(document)
    else:
        sys.stdout.write(render_statements(document))
    if not report.ok:
        print(
            "edge-node: billing does not account for usage served: an unexplained difference,"
            " usage set aside, or unreadable queue records",
            file=sys.stderr,
        )
    return 0 if report.ok else EXIT_UNBILLED


def _invoices(config: Config, tenant_id: str | None, progress: Progress) -> dict[str, Any]:
    """Each billed tenant's invoices, read from Stripe."""
    from sync.billing.commands import read_invoices  # noqa: PLC0415

    progress.step("reading Stripe's invoices")
    return asyncio.run(read_invoices(config, tenant_id))
