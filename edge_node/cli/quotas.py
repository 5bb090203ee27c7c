"""`tenants create --quota`, `tenants update`, `keys create --credits` and `keys list`: a
tenant's own usage allowance per billing period, and API keys' credits (docs/quotas.md)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from edge_node.cli.support import emit, open_registry, require_data_dir, require_uuid
from edge_node.cli.tenant_email import update_email
from edge_node.clock import format_us, now_ms
from edge_node.config import Config
from edge_node.errors import RegistryError
from edge_node.tenants.credits import CreditStore
from edge_node.tenants.model import QUOTA_POLICIES, KeyCredits

_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def add_quota_update(update: Any) -> None:
    """`tenants update`'s quota options, beside its `--email` (edge_node.cli.tenant_email)."""
    add_quota_options(update)
    update.add_argument(
        "--plan-quota",
        action="store_true",
        help="drop the tenant's own quota and policy: its plan's apply again",
    )
    update.set_defaults(handler=_tenants_update)


def _tenants_update(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    quota_change = args.plan_quota or args.quota is not None or args.quota_policy is not None
    if args.plan_quota and (args.quota is not None or args.quota_policy is not None):
        raise RegistryError("--plan-quota drops the tenant's own quota: give it alone")
    if not quota_change and args.email is None:
        raise RegistryError(
            "nothing to change: give --email, --quota, --quota-policy or --plan-quota"
        )
    document: dict[str, Any] = {}
    if quota_change:
        document.update(_set_quota(config, args))
    if args.email is not None:
        document.update(update_email(config, args.tenant_id, args.email))
    return emit(document)


def _set_quota(config: Config, args: argparse.Namespace) -> dict[str, object]:
    with open_registry(config) as registry:
        tenant = registry.get_tenant(args.tenant_id)
        if tenant is None:
            raise RegistryError(f"no tenant with id {args.tenant_id}")
        quota, policy = None, None
        if not args.plan_quota:
            quota = tenant.quota if args.quota is None else args.quota
            policy = tenant.quota_policy if args.quota_policy is None else args.quota_policy
        return registry.set_quota(args.tenant_id, quota, policy).to_json()


def duration(text: str) -> int:
    """argparse type: a whole number of seconds, minutes, hours or days (`30d`, `12h`,
    `3600s` or `3600`), more than 0."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SECONDS else (text, "s")
    if not number.isascii() or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 30d, 12h, 90m or 3600s, got {text!r}"
        )
    return int(number) * _SECONDS[unit]


def add_credit_options(command: Any) -> None:
    """`keys create`'s `--credits N [--refill N --refill-every PERIOD]`."""
    command.add_argument(
        "--credits",
        type=non_negative_int,
        metavar="UNITS",
        help="units the key may spend (billable requests, as the operation table bills them);"
        " at zero it is refused with 429 credits-exhausted",
    )
    command.add_argument(
        "--refill", type=non_negative_int, metavar="UNITS", help="set the credits back to this"
    )
    command.add_argument(
        "--refill-every", type=duration, metavar="PERIOD", help="how often: 30d, 12h, 3600s"
    )


def credit_grant(args: argparse.Namespace) -> KeyCredits | None:
    """The credit grant `keys create`'s options describe; None without --credits."""
    if (args.refill is None) != (args.refill_every is None):
        raise RegistryError("--refill and --refill-every go together")
    if args.credits is None:
        if args.refill is not None:
            raise RegistryError("--refill needs --credits (the units the key starts with)")
        return None
    return KeyCredits(args.credits, args.refill or 0, args.refill_every or 0)


def add_keys_list_command(keys: Any) -> None:
    listing = keys.add_parser("list", help="list a tenant's API keys, with their credits left")
    listing.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
    listing.set_defaults(handler=_keys_list)


def _keys_list(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    require_data_dir(config)
    with (
        open_registry(config) as registry,
        contextlib.closing(CreditStore.open(config.data_path)) as credits,
    ):
        if registry.get_tenant(args.tenant_id) is None:
            raise RegistryError(f"no tenant with id {args.tenant_id}")
        listed = []
        for key_id, role, created, revoked, grant in registry.list_keys(args.tenant_id):
            key: dict[str, object] = {
                "key_id": key_id,
                "role": role,
                "created_at": format_us(created),
                "revoked_at": None if revoked is None else format_us(revoked),
                "credits": None,
            }
            if grant is not None:
                balance = credits.balance(key_id, grant, now_ms())
                key.update(grant.to_json(), credits_left=balance.remaining)
                key["next_refill_in_seconds"] = balance.reset_seconds
            listed.append(key)
        return emit(listed)
