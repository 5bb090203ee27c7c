"""`tenants create --quota` and `tenants update`: a tenant's own usage allowance per billing
period and its policy past it (docs/quotas.md)."""

from __future__ import annotations

import argparse
from typing import Any

from edge_node.cli.support import emit, open_registry, require_uuid
from edge_node.config import Config
from edge_node.errors import RegistryError
from edge_node.tenants.model import QUOTA_POLICIES


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of units, 0 or more, else a usage error naming the flag
    (argparse prefixes the message with it)."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number 0 or more, got {text!r}")
    return int(text)


def add_quota_options(command: Any) -> None:
    """The `--quota` and `--quota-policy` options of a command that sets a tenant's own."""
    command.add_argument(
        "--quota",
        type=non_negative_int,
        metavar="UNITS",
        help="the tenant's own allowance per billing period, in units (default: its plan's,"
        " [quotas.<plan>].allowance)",
    )
    command.add_argument(
        "--quota-policy",
        choices=QUOTA_POLICIES,
        help="past the allowance: overage (served and billed) or block (429 quota-exhausted);"
        " default: its plan's",
    )


def add_update_command(tenants: Any) -> None:
    """`tenants update TENANT_ID`: change what `tenants create` set that may change."""
    update = tenants.add_parser(
        "update", help="change a tenant's own quota and quota policy on this node"
    )
    update.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
    add_quota_options(update)
    update.add_argument(
        "--plan-quota",
        action="store_true",
        help="drop the tenant's own quota and policy: its plan's apply again",
    )
    update.set_defaults(handler=_tenants_update)


def _tenants_update(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    if args.plan_quota and (args.quota is not None or args.quota_policy is not None):
        raise RegistryError("--plan-quota drops the tenant's own quota: give it alone")
    if not args.plan_quota and args.quota is None and args.quota_policy is None:
        raise RegistryError("nothing to change: give --quota, --quota-policy or --plan-quota")
    with open_registry(config) as registry:
        tenant = registry.get_tenant(args.tenant_id)
        if tenant is None:
            raise RegistryError(f"no tenant with id {args.tenant_id}")
        quota, policy = None, None
        if not args.plan_quota:
            quota = tenant.quota if args.quota is None else args.quota
            policy = tenant.quota_policy if args.quota_policy is None else args.quota_policy
        return emit(registry.set_quota(args.tenant_id, quota, policy).to_json())
