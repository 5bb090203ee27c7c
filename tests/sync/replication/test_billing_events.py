"""Billing state through a real central PostgreSQL: a Stripe event applied on one edge reaches
every edge, edges converge whatever order events reach them in, a registry download never
reverts a newer billing state, and the Stripe customer id travels with the tenant."""

from __future__ import annotations

import time

from edge_node.tenants.model import TenantRecord
from edge_node.tenants.shared_events import BillingReplica, SharedBillingEvent
from edge_node.tenants.standing import parse_event
from edge_node.tenants.stripe_events import BillingEventStore
from sync.postgres import Connection
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge
from tests.tenants.webhooks.conftest import invoice_event, subscription_event

NOW = int(time.time())


def deliver(edge: Edge, event: dict[str, object]) -> str:
    """Apply a Stripe event on `edge` as its webhook endpoint does; the outcome."""
    return BillingEventStore(edge.node_database).apply(parse_event(event)).outcome


def billing(edge: Edge, tenant_id: str) -> tuple[object, ...]:
    """The tenant's status and billing columns on `edge`."""
    row = edge.node_database.execute(
        "SELECT status, billing_status, billing_event_created, subscription_event_created,"
        " past_due_since, stripe_customer_id FROM tenants WHERE tenant_id = ?",
        (tenant_id,),
    ).fetchone()
    return tuple(row)


def link(edge: Edge, tenant_id: str, customer: str) -> None:
    """What provisioning records once Stripe made the customer."""
    edge.registry.set_stripe_customer(tenant_id, customer)


class TestReplication:
    async def test_a_cancellation_received_by_one_edge_reaches_the_others(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """customer.subscription.deleted delivered to edge A cancels the tenant on edge B
        after one sync round each; B records the event as applied, A's outbox is empty."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _ = a.registry.create_tenant("acme")
        link(a, tenant.tenant_id, "cus_a")
        await a.sync(central)
        await b.sync(central)
        assert billing(b, tenant.tenant_id)[0] == "active"
        assert deliver(a, subscription_event("evt_1", NOW, "cus_a", deleted=True)) == "applied"
        await a.sync(central)
        assert BillingReplica(a.node_database).pending_uploads() == []
        assert await db.fetchval("SELECT count(*) FROM billing_events") == 1
        await b.sync(central)
        assert billing(b, tenant.tenant_id)[:2] == ("canceled", "canceled")
        assert BillingEventStore(b.node_database).outcome("evt_1") == "applied"
        assert billing(a, tenant.tenant_id) == billing(b, tenant.tenant_id)

    async def test_edges_that_got_different_events_converge(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """A lapse whose events Stripe spread over two edges (a failure and the final invoice
        paid on A, the cancellation on B, each arriving out of order) ends canceled, with the
        same billing columns, on both."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _ = a.registry.create_tenant("acme")
        link(a, tenant.tenant_id, "cus_a")
        await a.sync(central)
        await b.sync(central)
        assert deliver(a, invoice_event("evt_paid", NOW + 20, "cus_a", paid=True)) == "applied"
        assert deliver(a, invoice_event("evt_fail", NOW, "cus_a", paid=False)) == "stale"
        sub = subscription_event("evt_del", NOW + 10, "cus_a", deleted=True)
        assert deliver(b, sub) == "applied"
        for _ in range(2):
            await a.sync(central)
            await b.sync(central)
        assert billing(a, tenant.tenant_id)[0] == "canceled"
        assert billing(a, tenant.tenant_id) == billing(b, tenant.tenant_id)

    async def test_an_event_for_a_tenant_not_here_yet_waits_for_it(
        self, make_edge: EdgeFactory
    ) -> None:
        """An event downloaded before its tenant is kept, not recorded as seen, and applied
        as soon as the tenant arrives."""
        edge = make_edge("edge-a")
        replica = BillingReplica(edge.node_database)
        tenant_id = "3f0b8f5e-4a57-4c1e-9d43-6f3c2f1b9a10"
        event = SharedBillingEvent("evt_1", tenant_id, "invoice.payment_failed", NOW, None, None,
                                   "past_due")  # fmt: skip
        assert replica.apply_downloaded([event]) == 0
        assert BillingEventStore(edge.node_database).outcome("evt_1") is None
        now_us = NOW * 1_000_000
        record = TenantRecord(tenant_id, "acme", "active", "payg", None, None, now_us, now_us)
        edge.registry.apply_remote([record], [])
        assert replica.apply_waiting() == 1
        assert billing(edge, tenant_id)[:2] == ("past_due", "past_due")
        assert replica.apply_waiting() == 0


class TestRegistryDownloads:
    async def test_a_central_change_never_reverts_a_newer_billing_state(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A tenant canceled by a webhook stays canceled when its central row (status active)
        changes and comes down; a central suspension still applies, and lifting it returns
        the tenant to canceled, not to active."""
        a = make_edge("edge-a")
        tenant, _ = a.registry.create_tenant("acme")
        link(a, tenant.tenant_id, "cus_a")
        await a.sync(central)
        deliver(a, subscription_event("evt_1", NOW, "cus_a", deleted=True))
        await db.execute("UPDATE tenants SET rate_limit_per_minute = 99")
        await a.sync(central)
        local = a.registry.get_tenant(tenant.tenant_id)
        assert local is not None
        assert (local.status, local.rate_limit_per_minute) == ("canceled", 99)
        await db.execute("UPDATE tenants SET status = 'suspended'")
        await a.sync(central)
        assert billing(a, tenant.tenant_id)[0] == "suspended"
        await db.execute("UPDATE tenants SET status = 'active'")
        await a.sync(central)
        assert billing(a, tenant.tenant_id)[0] == "canceled"

    async def test_the_stripe_customer_id_reaches_the_central_registry_and_every_edge(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A customer provisioned on edge A fills the central row and reaches edge B, where
        an event naming only the customer then finds the tenant; a second, different id
        from another edge never replaces it."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant, _ = a.registry.create_tenant("acme")
        await a.sync(central)
        await b.sync(central)
        link(a, tenant.tenant_id, "cus_a")
        await a.sync(central)
        assert await db.fetchval("SELECT stripe_customer_id FROM tenants") == "cus_a"
        await b.sync(central)
        assert billing(b, tenant.tenant_id)[5] == "cus_a"
        assert deliver(b, invoice_event("evt_1", NOW, "cus_a", paid=False)) == "applied"
        c = make_edge("edge-c")
        await c.sync(central)
        link(c, tenant.tenant_id, "cus_other")  # already linked: kept as it is
        await c.sync(central)
        assert await db.fetchval("SELECT stripe_customer_id FROM tenants") == "cus_a"
