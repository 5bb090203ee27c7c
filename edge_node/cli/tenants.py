"""`edge-node tenants` and `keys`: tenants, their API keys and the key material, as JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

from edge_node.cli.progress import Progress
from edge_node.cli.queues import queue_directories
from edge_node.cli.quotas import (
    add_credit_options,
    add_keys_list_command,
    add_quota_options,
    add_quota_update,
    credit_grant,
)
from edge_node.cli.support import (
    EXIT_LOCKED,
    emit,
    open_node,
    open_registry,
    positive_int,
    require_data_dir,
    require_uuid,
)
from edge_node.cli.tenant_email import (
    add_email_argument,
    add_update_command,
    email_for_new_tenant,
    set_new_tenant_email,
)
from edge_node.config import Config
from edge_node.crypto.keystore import open_keyring
from edge_node.errors import ConfigError, RegistryError
from edge_node.rating.store import TenantStores
from edge_node.tenants.model import PLANS, ROLES


def add_tenant_commands(commands: Any) -> None:
    """Register the `tenants` and `keys` commands on the CLI's subparsers."""
    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = tenants.add_parser("create", help="register a tenant and print its first API key")
    create.add_argument("--name", required=True, help="the tenant's name, 1 to 200 characters")
    create.add_argument(
        "--plan", choices=PLANS, default="payg", help="its billing plan (default payg)"
    )
    create.add_argument(
        "--rate-limit",
        type=positive_int,
        metavar="PER_MINUTE",
        help="its requests per minute (default: rate_limit.per_minute)",
    )
    add_quota_options(create)
    create.add_argument(
        "--format",
        choices=("json", "env"),
        default="json",
        help="json (default), or env: TENANT=... and KEY=... lines for a shell's eval",
    )
    add_email_argument(create)
    create.set_defaults(handler=_tenants_create)
    add_quota_update(add_update_command(tenants))
    tenants.add_parser("list", help="list tenants").set_defaults(handler=_tenants_list)
    for action, status in (("suspend", "suspended"), ("resume", "active")):
        cmd = tenants.add_parser(action, help=f"mark a tenant {status}")
        cmd.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
        cmd.set_defaults(handler=_tenants_set_status, status=status)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    key_create = keys.add_parser("create", help="issue a new API key for a tenant")
    key_create.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
    key_create.add_argument(
        "--role", choices=ROLES, default="admin", help="what the key may do (default admin)"
    )
    add_credit_options(key_create)
    key_create.set_defaults(handler=_keys_create)
    add_keys_list_command(keys)
    key_revoke = keys.add_parser("revoke", help="revoke an API key by its key id")
    key_revoke.add_argument(
        "key_id", metavar="KEY_ID", help="the key's id (key_id in `keys create`'s answer)"
    )
    key_revoke.set_defaults(handler=_keys_revoke)
    _add_key_material_commands(tenants, keys)


def _add_key_material_commands(tenants: Any, keys: Any) -> None:
    """`tenants delete` (crypto-shredding) and `keys rotate-master` (docs/security.md)."""
    delete = tenants.add_parser(
        "delete",
        help="delete a tenant for good: destroy its data keys (its comments become unreadable"
        " in every copy), then its ratings file and registry rows",
    )
    delete.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
    delete.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (on a terminal it asks; elsewhere it never does)",
    )
    delete.set_defaults(handler=_tenants_delete)
    rotate = keys.add_parser(
        "rotate-master",
        help="re-wrap every tenant data key under a new master key (the daemon must be stopped)",
    )
    rotate.add_argument(
        "--new-key-file",
        type=Path,
        metavar="FILE",
        help="the new master key (generated if absent); required when"
        " encryption.master_key_file is set",
    )
    rotate.set_defaults(handler=_keys_rotate_master)
    _add_rotate_fleet_command(keys)


def _add_rotate_fleet_command(keys: Any) -> None:
    rotate = keys.add_parser(
        "rotate-fleet",
        help="re-wrap the central tenant data keys under encryption.previous_fleet_key_file"
        " with encryption.fleet_key_file (docs/security.md)",
    )
    rotate.add_argument(
        "--dsn", help="postgresql:// URL (default: every shard in central.dsns)", metavar="DSN"
    )
    rotate.add_argument(
        "--batch-size", type=positive_int, default=500, metavar="N", help="keys per transaction"
    )
    rotate.set_defaults(handler=_keys_rotate_fleet)


def _tenants_create(config: Config, args: argparse.Namespace) -> int:
    if not 1 <= len(args.name) <= 200:
        raise RegistryError("--name must be 1 to 200 characters")
    email = email_for_new_tenant(config, args.email)
    with open_registry(config) as registry:
        tenant, key = registry.create_tenant(
            args.name,
            plan=args.plan,
            rate_limit_per_minute=args.rate_limit,
            quota=args.quota,
            quota_policy=args.quota_policy,
        )
    set_new_tenant_email(config, tenant.tenant_id, email)
    with _open_stores(config) as stores:
        stores.get(tenant.tenant_id)  # create the tenant's file and schema now, not on first use
    document = {**tenant.to_json(), "api_key": key.api_key, "key_id": key.key_id, "role": key.role}
    if email is not None:
        document["email"] = email
    if config.stripe.enabled:
        document.update(_provision_in_stripe(config, tenant.tenant_id))
    if args.format == "env":
        print(f"TENANT={shlex.quote(tenant.tenant_id)}\nKEY={shlex.quote(key.api_key)}")
        return 0
    return emit(document)


def _provision_in_stripe(config: Config, tenant_id: str) -> dict[str, Any]:
    """Make the new tenant a Stripe customer now if Stripe answers; else the daemon will."""
    from sync.billing.commands import provision_tenant  # noqa: PLC0415

    with open_node(config) as node_database:
        outcome = asyncio.run(provision_tenant(config, node_database, tenant_id))
    if outcome["stripe"] == "pending":
        print(
            f"edge-node: the tenant works now; Stripe provisioning is left to the running"
            f" daemon's sync worker: {outcome['stripe_error']}",
            file=sys.stderr,
        )
    return outcome


def _tenants_list(config: Config, args: argparse.Namespace) -> int:
    require_data_dir(config)
    with open_registry(config) as registry:
        return emit([tenant.to_json() for tenant in registry.list_tenants()])


def _tenants_set_status(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    with open_registry(config) as registry:
        return emit(registry.set_status(args.tenant_id, args.status).to_json())


def _keys_create(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    with open_registry(config) as registry:
        grant = credit_grant(args)
        issued = registry.create_key(args.tenant_id, args.role, grant)
        return emit({**issued.to_json(), **(grant.to_json() if grant else {})})


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    with open_registry(config) as registry:
        return emit(registry.revoke_key(args.key_id))


def _tenants_delete(config: Config, args: argparse.Namespace) -> int:
    from edge_node.deletion import delete_tenant  # noqa: PLC0415

    require_uuid(args.tenant_id)
    require_data_dir(config)
    with open_registry(config) as registry, _open_stores(config) as stores:
        tenant = registry.get_tenant(args.tenant_id)
        if tenant is None and not stores.path(args.tenant_id).exists():
            raise RegistryError(f"no tenant with id {args.tenant_id}")
        name = args.tenant_id if tenant is None else tenant.name
        if not args.yes and not confirm_deletion(name, args.tenant_id):
            print("edge-node: nothing deleted", file=sys.stderr)
            return 1
        return emit(delete_tenant(registry, stores, args.tenant_id))


def confirm_deletion(name: str, tenant_id: str) -> bool:
    """On a terminal, ask for the tenant's name (or id) before its keys are destroyed; with
    no terminal there is no one to ask: scripts pass --yes to say they mean it."""
    if not sys.stdin.isatty():
        return True
    print(
        f"Deleting tenant {name!r} ({tenant_id}) destroys its data keys: its comments become"
        " unreadable in every copy, backups included, and it cannot be undone.",
        file=sys.stderr,
    )
    try:
        answer = input(f"Type the tenant's name ({name}) to delete it: ")
    except EOFError:
        return False
    return answer.strip() in (name, tenant_id)


def _keys_rotate_master(config: Config, args: argparse.Namespace) -> int:
    from edge_node.crypto.rotation import rotate_master  # noqa: PLC0415

    serving = _serving_process(config)
    if serving is not None:
        print(
            f"edge-node: keys rotate-master needs the daemon stopped, and {serving} serves"
            f" {config.data_path}: stop it first (systemctl stop edge-node), run this again,"
            " then start it",
            file=sys.stderr,
        )
        return EXIT_LOCKED
    with contextlib.closing(open_keyring(config)) as keyring:
        return emit(rotate_master(keyring, args.new_key_file))


def _open_stores(config: Config) -> contextlib.closing[TenantStores]:
    """The tenants' rating files with the node's key store, closed after the command."""
    return contextlib.closing(
        TenantStores(
            config.data_path / "tenants", node_id=config.node_id, keyring=open_keyring(config)
        )
    )


def _serving_process(config: Config) -> str | None:
    """Which process serves the data directory (a running daemon holds its queue
    directories' locks), or None when none does."""
    from edge_node.queue import QueueLocked  # noqa: PLC0415
    from edge_node.queue.locking import DirectoryLock  # noqa: PLC0415

    for directory in queue_directories(config):
        try:
            DirectoryLock.acquire(directory).release()
        except QueueLocked as exc:
            return f"process {exc.owner_pid}" if exc.owner_pid else "a running edge-node"
    return None


def _keys_rotate_fleet(config: Config, args: argparse.Namespace) -> int:
    from edge_node.crypto.keystore import fleet_keys  # noqa: PLC0415
    from sync.central.fleet_rotation import rotate_fleet_dsns  # noqa: PLC0415

    current, previous = fleet_keys(config)
    if current is None:
        raise ConfigError(
            "keys rotate-fleet needs the new fleet key in encryption.fleet_key_file and the"
            " key being retired in encryption.previous_fleet_key_file"
        )
    dsns = (args.dsn,) if args.dsn else config.central.dsns
    if not dsns:
        raise ConfigError("no central PostgreSQL: pass --dsn or set central.dsns")
    progress = Progress("re-wrapping tenant data keys, batch")
    reports = asyncio.run(
        rotate_fleet_dsns(
            dsns,
            current,
            previous,
            batch_size=args.batch_size,
            on_batch=lambda total: progress.step(f"({total} re-wrapped on this shard)"),
        )
    )
    progress.done(f"{sum(r['rewrapped'] for r in reports)} re-wrapped")
    emit(reports)
    left = sum(r["under_previous_fleet_key"] for r in reports)
    if left:
        print(
            f"edge-node: {left} data keys are still wrapped by the previous fleet key (they do"
            " not unwrap with it): keep that key until they are dealt with",
            file=sys.stderr,
        )
    return 1 if left else 0
