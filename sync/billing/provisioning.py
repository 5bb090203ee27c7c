"""Stripe provisioning: every tenant becomes one Stripe customer with a subscription on its plan.

A tenant is usable the moment it is created; provisioning follows, from `edge-node tenants
create` when Stripe answers at once, else from the sync worker, which retries every
`stripe.provisioning_interval_seconds` (with backoff) until it succeeds. Each step is safe to
repeat, so a crash or a lost answer anywhere costs only a retry:

1. the customer: found by metadata tenant_id, or created with an Idempotency-Key derived from
   the tenant (sync/stripe/gateway.py), then stored in node.sqlite (`stripe_customer_id`,
   set once, never replaced);
2. the subscription on the plan's price from the catalog (sync/stripe/catalog.py), found
   among the customer's live subscriptions or created the same way, then stored
   (`subscription_id`). With `stripe.collection_method = send_invoice` Stripe emails the
   invoices, so the customer must have an email (set here with `tenants create --email` or
   `tenants update --email`, or already in Stripe): without one the subscription is refused
   with that reason, until an address is set.

A tenant's email is given to its customer at creation, and every later change by an update
of the customer (`push_emails`, each round), so an address set while Stripe is unreachable
reaches it afterwards (edge_node/tenants/contacts.py).

Stripe refusing one tenant for good (PermanentSyncError) is logged and that tenant retried
next round without holding the others back; an outage (TransientSyncError) ends the round.
Either is recorded against the tenant in node.sqlite (the last error, and since when it has
been failing), and cleared by its next success: `edge-node status`, the metric
`edge_node_stripe_unprovisioned_tenants{state="failing"}` and `billing reconcile` (usage that
waits for a customer) show a tenant nothing can be billed for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_node.clock import now_us
from edge_node.errors import PermanentSyncError, SyncError, TransientSyncError
from edge_node.tenants.model import StripeLink
from edge_node.tenants.registry import TenantRegistry
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import StripeGateway

log = logging.getLogger(__name__)

NO_EMAIL = (
    "tenant {tenant_id} has no email, and invoices are sent by email (stripe.collection_method"
    " = send_invoice): set one with `edge-node tenants update {tenant_id} --email ADDRESS`"
)
NO_CATALOG = (
    "no Stripe catalog yet: run `edge-node stripe bootstrap` so tenants can be subscribed"
    " to their plans"
)


@dataclass
class ProvisioningReport:
    """What one round did: ids stored, and tenants Stripe refused (id -> error)."""

    customers: int = 0
    subscriptions: int = 0
    emails: int = 0
    refused: dict[str, str] = field(default_factory=dict)


class Provisioner:
    """Provisions this node's tenants in Stripe through a gateway."""

    def __init__(
        self,
        gateway: StripeGateway,
        registry: TenantRegistry,
        catalog: Callable[[], BillingCatalog | None],
    ) -> None:
        self._gateway = gateway
        self._registry = registry
        self._contacts = registry.contacts()
        self._catalog = catalog

    async def provision_all(self) -> ProvisioningReport:
        """One round over every tenant still missing a customer or a subscription."""
        report = ProvisioningReport()
        tenants = self._registry.unprovisioned_tenants()
        if not tenants:
            return report
        catalog = self._catalog()
        for tenant in tenants:
            try:
                await self._attempt(tenant, catalog, report)
            except PermanentSyncError as exc:
                log.error("Stripe refused to provision tenant %s: %s", tenant.tenant_id, exc)
                report.refused[tenant.tenant_id] = str(exc)
        if catalog is None and any(t.subscription_id is None for t in tenants):
            raise TransientSyncError(NO_CATALOG)
        return report

    async def provision(self, tenant_id: str) -> StripeLink:
        """Provision one tenant now (the CLI's path); its link as stored afterwards."""
        link = self._registry.stripe_link(tenant_id)
        if link is None:
            raise PermanentSyncError(f"no tenant with id {tenant_id}")
        await self._attempt(link, self._catalog(), ProvisioningReport())
        stored = self._registry.stripe_link(tenant_id)
        assert stored is not None
        return stored

    async def _attempt(
        self, tenant: StripeLink, catalog: BillingCatalog | None, report: ProvisioningReport
    ) -> None:
        """Provision one tenant, recording the outcome against it (failing since, error)."""
        try:
            await self._provision(tenant, catalog, report)
        except (SyncError, TimeoutError) as exc:
            self._registry.provisioning_failed(
                tenant.tenant_id, str(exc) or type(exc).__name__, now_us()
            )
            raise
        if tenant.subscription_id is None and catalog is None:
            self._registry.provisioning_failed(tenant.tenant_id, NO_CATALOG, now_us())
        else:
            self._registry.provisioning_succeeded(tenant.tenant_id)

    async def _provision(
        self, tenant: StripeLink, catalog: BillingCatalog | None, report: ProvisioningReport
    ) -> None:
        customer_id = tenant.stripe_customer_id
        if customer_id is None:
            found = await self._gateway.ensure_customer(
                tenant_id=tenant.tenant_id,
                name=tenant.name,
                created_after=tenant.created_at / 1e6 if tenant.created_at else None,
                email=self._contacts.email(tenant.tenant_id),
            )
            customer_id = self._registry.set_stripe_customer(tenant.tenant_id, found)
            report.customers += 1
            log.info("tenant %s is Stripe customer %s", tenant.tenant_id, customer_id)
        if tenant.subscription_id is None and catalog is not None:
            await self._require_email(tenant.tenant_id, customer_id)
            subscription_id = await self._gateway.ensure_subscription(
                tenant_id=tenant.tenant_id,
                customer_id=customer_id,
                price_ids=[catalog.price_for(tenant.plan)],
            )
            self._registry.set_subscription(tenant.tenant_id, subscription_id)
            report.subscriptions += 1
            log.info(
                "tenant %s subscribed to plan %s (%s)",
                tenant.tenant_id,
                tenant.plan,
                subscription_id,
            )

    async def _require_email(self, tenant_id: str, customer_id: str) -> None:
        """Refuse a `send_invoice` subscription for a customer nobody can send invoices to:
        no address here (set on this node) and none in Stripe (set on another node, or by
        hand in the Dashboard)."""
        if self._gateway.collection_method != "send_invoice":
            return
        if self._contacts.email(tenant_id) is None and (
            await self._gateway.customer_email(customer_id) is None
        ):
            raise PermanentSyncError(NO_EMAIL.format(tenant_id=tenant_id))

    async def push_emails(self, report: ProvisioningReport | None = None) -> None:
        """Give Stripe each tenant's email that its customer does not have yet; one refused
        for good is logged and tried again next round, an outage ends the round."""
        for waiting in self._contacts.to_send():
            try:
                await self._gateway.set_customer_email(waiting.customer_id, waiting.email)
            except PermanentSyncError as exc:
                log.error("Stripe refused the email of tenant %s: %s", waiting.tenant_id, exc)
                continue
            self._contacts.sent(waiting.tenant_id, waiting.email)
            if report is not None:
                report.emails += 1
            log.info(
                "tenant %s: Stripe customer %s has its email",
                waiting.tenant_id,
                waiting.customer_id,
            )


@dataclass
class ProvisioningJob:
    """Provisioning as a sync worker job (sync/jobs.py); closing it closes the gateway."""

    provisioner: Provisioner
    gateway: StripeGateway
    interval: float
    name: str = "stripe-provisioning"

    async def run(self) -> None:
        report = await self.provisioner.provision_all()
        await self.provisioner.push_emails(report)

    async def close(self) -> None:
        await self.gateway.close()
