"""A tenant's billing email on the command line: `tenants create --email` and
`tenants update TENANT_ID --email` (edge_node.tenants.contacts; docs/billing.md)."""

from __future__ import annotations

import argparse
from typing import Any

from edge_node.cli.support import emit, open_registry, require_uuid
from edge_node.config import Config
from edge_node.errors import RegistryError
from edge_node.tenants.contacts import check_email

EMAIL_HELP = (
    "where Stripe sends the tenant's invoices; required while Stripe is configured with"
    " stripe.collection_method = send_invoice (the default)"
)


def add_email_argument(parser: Any) -> None:
    parser.add_argument("--email", metavar="ADDRESS", help=EMAIL_HELP)


def add_update_command(tenants: Any) -> Any:
    """`tenants update TENANT_ID --email ADDRESS`; the parser, for other options to join."""
    update = tenants.add_parser(
        "update",
        help="change a tenant's billing email (the sync worker gives it to Stripe) or its own"
        " quota",
    )
    update.add_argument("tenant_id", metavar="TENANT_ID", help="the tenant's id (a UUID)")
    add_email_argument(update)
    update.set_defaults(handler=_tenants_update)
    return update


def email_for_new_tenant(config: Config, email: str | None) -> str | None:
    """The checked address for `tenants create`, before anything is created; refused when
    invoices are emailed and there is none."""
    if email is not None:
        return check_email(email)
    if config.stripe.enabled and config.stripe.collection_method == "send_invoice":
        raise RegistryError(
            "--email is required: Stripe sends this node's invoices by email"
            " (stripe.collection_method = send_invoice), so a tenant without an address would"
            " never receive one; or set stripe.collection_method = charge_automatically"
            " (docs/billing.md)"
        )
    return None


def set_new_tenant_email(config: Config, tenant_id: str, email: str | None) -> None:
    if email is not None:
        with open_registry(config) as registry:
            registry.contacts().set_email(tenant_id, email)


def _tenants_update(config: Config, args: argparse.Namespace) -> int:
    require_uuid(args.tenant_id)
    if args.email is None:
        raise RegistryError("nothing to update: give --email ADDRESS")
    return emit(update_email(config, args.tenant_id, args.email))


def update_email(config: Config, tenant_id: str, email: str) -> dict[str, Any]:
    """Set the tenant's billing email; what `tenants update --email` prints of it."""
    with open_registry(config) as registry:
        contacts = registry.contacts()
        contacts.set_email(tenant_id, check_email(email))
        link = registry.stripe_link(tenant_id)
        pending = contacts.pending(tenant_id)
    return {
        "tenant_id": tenant_id,
        "email": email,
        "stripe_customer_id": link.stripe_customer_id if link else None,
        "stripe_email": "pending" if pending else "sent",
    }
