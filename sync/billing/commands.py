"""What the `edge-node` CLI does with Stripe: bootstrap the catalog, provision a new tenant,
read the invoices reconcile sets against the node's statements."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from edge_node.config import Config
from edge_node.errors import ConfigError, SyncError
from edge_node.node_database import open_node_database
from edge_node.secrets import SecretFile
from edge_node.tenants.registry import TenantRegistry
from sync.billing.jobs import catalog_loader, open_gateway
from sync.billing.provisioning import Provisioner
from sync.billing.reconcile import stripe_invoices
from sync.stripe.catalog import catalog_path, save_catalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.idempotency import CreateKeys
from sync.stripe.periods import InvoicedPeriod

# `tenants create` waits at most this long for Stripe before leaving provisioning to the
# daemon's sync worker: the tenant works either way.
PROVISION_WAIT_SECONDS = 10.0


def _gateway(config: Config, create_keys: CreateKeys) -> StripeGateway:
    if not config.stripe.enabled:
        raise ConfigError("Stripe is not configured: set stripe.api_key_file")
    api_key = SecretFile(
        config.stripe.api_key_file, name="stripe.api_key_file", check_interval=None
    )
    return open_gateway(config.stripe, api_key.value, create_keys)


GRACE_STEP = (
    "Stripe offers no API for the invoice finalization grace: in the Dashboard, open"
    ' Settings, Billing, Invoices, "Invoice finalization grace period", edit the account'
    " default and set the delay to {hours:g} hours (stripe.invoice_grace_hours), then run"
    " `edge-node stripe bootstrap` again to read it back"
)


async def bootstrap(config: Config) -> dict[str, Any]:
    """Create (or find) the meter, product and prices; write the catalog file; read the
    account's invoice grace back (`invoice_grace`: its `state` is `confirmed`, `differs` or
    `unverified` when the account has no draft to show it); the command's output."""
    node_database = open_node_database(config.data_path)
    try:
        gateway = _gateway(config, CreateKeys(node_database))
        try:
            catalog = await gateway.bootstrap(meter_event_name=config.stripe.meter_event_name)
            observed = await gateway.observed_invoice_grace()
        finally:
            await gateway.close()
    finally:
        node_database.close()
    path = catalog_path(config.data_path, config.stripe.catalog_file)
    save_catalog(path, catalog)
    return {
        "catalog_file": str(path),
        **catalog.to_json(),
        "invoice_grace": grace_reading(config.stripe.invoice_grace_hours, observed),
    }


def grace_reading(hours: float, observed: tuple[int, str] | None) -> dict[str, Any]:
    """The configured grace against the one Stripe's drafts show, and what to do about it."""
    configured = round(hours * 3600)
    reading: dict[str, Any] = {
        "configured_seconds": configured,
        "observed_seconds": None if observed is None else observed[0],
        "observed_on": None if observed is None else observed[1],
    }
    if observed is None:
        reading["state"] = "unverified"
        reading["detail"] = (
            "no subscription's period-end draft invoice in the account shows the grace yet;"
            " run bootstrap again after a period ends. " + GRACE_STEP.format(hours=hours)
        )
    elif observed[0] == configured:
        reading["state"] = "confirmed"
    else:
        reading["state"] = "differs"
        reading["detail"] = GRACE_STEP.format(hours=hours)
    return reading


async def provision_tenant(
    config: Config, node_database: sqlite3.Connection, tenant_id: str
) -> dict[str, Any]:
    """Try to provision a tenant just created; what happened, for the command's output.

    Never raises for Stripe being down or refusing: the tenant already works, and the
    daemon's sync worker retries provisioning until it succeeds."""
    registry = TenantRegistry(node_database)
    try:
        gateway = _gateway(config, CreateKeys(node_database))
    except ConfigError as exc:  # the tenant exists already: report, do not lose its key
        return _pending(registry, tenant_id, exc)
    provisioner = Provisioner(gateway, registry, catalog_loader(config))
    try:
        link = await asyncio.wait_for(
            provisioner.provision(tenant_id),
            timeout=min(PROVISION_WAIT_SECONDS, config.stripe.timeout_seconds),
        )
    except (SyncError, ConfigError, TimeoutError) as exc:
        return _pending(registry, tenant_id, exc)
    finally:
        await gateway.close()
    complete = link.stripe_customer_id is not None and link.subscription_id is not None
    return {
        "stripe": "provisioned" if complete else "pending",
        **(
            {}
            if complete
            else {"stripe_error": "no Stripe catalog: run `edge-node stripe bootstrap`"}
        ),
        "stripe_customer_id": link.stripe_customer_id,
        "subscription_id": link.subscription_id,
    }


async def read_invoices(config: Config, tenant_id: str | None) -> dict[str, list[InvoicedPeriod]]:
    """Each billed tenant's Stripe invoices, for `billing reconcile`."""
    api_key = SecretFile(
        config.stripe.api_key_file, name="stripe.api_key_file", check_interval=None
    )
    gateway = open_gateway(config.stripe, api_key.value)
    try:
        return await stripe_invoices(
            config.data_path, gateway, config.stripe.meter_event_name, tenant_id=tenant_id
        )
    finally:
        await gateway.close()


def _pending(registry: TenantRegistry, tenant_id: str, exc: Exception) -> dict[str, Any]:
    stored = registry.stripe_link(tenant_id)
    return {
        "stripe": "pending",
        "stripe_error": str(exc) or "timed out",
        "stripe_customer_id": stored.stripe_customer_id if stored else None,
        "subscription_id": stored.subscription_id if stored else None,
    }
