"""Stripe events move a tenant between active, past_due and canceled, and admission follows."""

from __future__ import annotations

import time

import pytest

from tests.tenants.webhooks.conftest import (
    WebhookNode,
    WebhookNodeFactory,
    invoice_event,
    subscription_event,
)

HOUR = 3600


class TestSubscriptionStatus:
    @pytest.mark.parametrize(
        ("stripe_status", "tenant_status"),
        [
            ("active", "active"),
            ("trialing", "active"),
            ("past_due", "past_due"),
            ("unpaid", "past_due"),
            ("canceled", "canceled"),
            ("incomplete_expired", "canceled"),
        ],
    )
    async def test_subscription_updated_maps_the_status(
        self, hooks: WebhookNode, stripe_status: str, tenant_status: str
    ) -> None:
        """customer.subscription.updated sets the tenant to the status its subscription's
        status maps to, starting from another status."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        start = "canceled" if tenant_status == "active" else "active"
        await hooks.deliver(subscription_event("evt_0", now - 10, "cus_a", start))
        answer = await hooks.deliver(subscription_event("evt_1", now, "cus_a", stripe_status))
        assert answer.body["outcome"] == "applied"
        assert hooks.billing(tenant)[:2] == (tenant_status, now)

    @pytest.mark.parametrize("stripe_status", ["incomplete", "paused", "something_new", None])
    async def test_other_subscription_statuses_are_ignored(
        self, hooks: WebhookNode, stripe_status: str | None
    ) -> None:
        """A subscription status with no mapping changes nothing and is recorded as ignored."""
        tenant = hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a")
        event["data"]["object"]["status"] = stripe_status
        assert (await hooks.deliver(event)).body["outcome"] == "ignored"
        assert hooks.billing(tenant) == ("active", None, None)

    async def test_subscription_deleted_cancels(self, hooks: WebhookNode) -> None:
        """customer.subscription.deleted makes the tenant canceled."""
        tenant = hooks.customer("cus_a")
        await hooks.deliver(subscription_event("evt_1", int(time.time()), "cus_a", deleted=True))
        assert hooks.billing(tenant)[0] == "canceled"

    async def test_a_new_subscription_revives_a_canceled_tenant(self, hooks: WebhookNode) -> None:
        """A later subscription.updated to active makes a canceled tenant active again."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        await hooks.deliver(subscription_event("evt_1", now - 60, "cus_a", deleted=True))
        await hooks.deliver(subscription_event("evt_2", now, "cus_a", "active"))
        assert hooks.billing(tenant)[0] == "active"


class TestInvoices:
    async def test_payment_failed_then_paid(self, hooks: WebhookNode) -> None:
        """invoice.payment_failed makes the tenant past_due from the event's time;
        invoice.paid makes it active again and clears that time."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        await hooks.deliver(invoice_event("evt_1", now - 60, "cus_a", paid=False))
        assert hooks.billing(tenant) == ("past_due", now - 60, (now - 60) * 1_000_000)
        await hooks.deliver(invoice_event("evt_2", now, "cus_a", paid=True))
        assert hooks.billing(tenant) == ("active", now, None)

    async def test_a_second_failure_keeps_the_first_failure_time(self, hooks: WebhookNode) -> None:
        """Stripe retries a failed payment; each retry's failure must not restart the grace."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        await hooks.deliver(invoice_event("evt_1", now - 3 * HOUR, "cus_a", paid=False))
        await hooks.deliver(invoice_event("evt_2", now, "cus_a", paid=False))
        assert hooks.billing(tenant)[2] == (now - 3 * HOUR) * 1_000_000

    @pytest.mark.parametrize("paid", [True, False])
    async def test_invoices_never_revive_a_canceled_tenant(
        self, hooks: WebhookNode, paid: bool
    ) -> None:
        """The final invoice of a canceled subscription, paid or not, leaves it canceled."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        await hooks.deliver(subscription_event("evt_1", now - 60, "cus_a", deleted=True))
        answer = await hooks.deliver(invoice_event("evt_2", now, "cus_a", paid=paid))
        assert answer.body["outcome"] == "ignored"
        assert hooks.billing(tenant)[0] == "canceled"


class TestWhichTenant:
    async def test_found_by_metadata_when_not_yet_linked(self, hooks: WebhookNode) -> None:
        """A tenant not yet linked to its customer is found by the event's metadata.tenant_id."""
        tenant = hooks.node.create_tenant()
        event = subscription_event(
            "evt_1", int(time.time()), "cus_new", deleted=True,
            metadata={"tenant_id": tenant.tenant_id},
        )  # fmt: skip
        assert (await hooks.deliver(event)).body["outcome"] == "applied"
        assert hooks.billing(tenant)[0] == "canceled"

    async def test_metadata_cannot_reach_a_tenant_linked_to_another_customer(
        self, hooks: WebhookNode
    ) -> None:
        """metadata.tenant_id naming a tenant of another customer finds no tenant."""
        victim = hooks.customer("cus_victim")
        event = subscription_event(
            "evt_1", int(time.time()), "cus_other", deleted=True,
            metadata={"tenant_id": victim.tenant_id},
        )  # fmt: skip
        assert (await hooks.deliver(event)).body["outcome"] == "unknown_tenant"
        assert hooks.billing(victim)[0] == "active"

    async def test_events_of_another_subscription_are_ignored(self, hooks: WebhookNode) -> None:
        """Once the tenant's subscription is known, events of another (an old, replaced one)
        do not move it."""
        tenant = hooks.customer("cus_a")
        hooks.node.storage.node_database.execute(
            "UPDATE tenants SET subscription_id = 'sub_current' WHERE tenant_id = ?",
            (tenant.tenant_id,),
        )
        event = subscription_event(
            "evt_1", int(time.time()), "cus_a", deleted=True, subscription="sub_old"
        )
        assert (await hooks.deliver(event)).body["outcome"] == "other_subscription"
        assert hooks.billing(tenant)[0] == "active"

    async def test_an_operator_suspension_outranks_billing(self, hooks: WebhookNode) -> None:
        """A suspended tenant stays suspended (403) whatever Stripe says; the event is recorded."""
        tenant = hooks.customer("cus_a")
        hooks.node.storage.registry.set_status(tenant.tenant_id, "suspended")
        answer = await hooks.deliver(subscription_event("evt_1", int(time.time()), "cus_a"))
        assert answer.body["outcome"] == "tenant_suspended"
        got = await hooks.get(tenant)
        assert (got.status, got.problem) == (403, "tenant-suspended")


class TestAdmission:
    async def test_canceled_gets_402_on_billable_routes_only(self, hooks: WebhookNode) -> None:
        """A canceled tenant gets 402 payment-required on every tenant route, with key or
        token, while /healthz, /readyz and the OpenAPI document still answer."""
        tenant = hooks.customer("cus_a")
        await hooks.deliver(subscription_event("evt_1", int(time.time()), "cus_a", deleted=True))
        for path in ("/ratings", "/items/book/score"):
            got = await hooks.get(tenant, path)
            assert (got.status, got.problem) == (402, "payment-required")
        async with hooks.node.session.post(
            hooks.node.tenant_url(tenant.tenant_id, "/ratings"),
            json={"user_id": "u", "item_id": "i", "score": 5},
            headers={"Authorization": f"Bearer {hooks.node.token(tenant.tenant_id)}"},
        ) as response:
            assert response.status == 402
        for path in ("/healthz", "/readyz", "/v1/openapi.json"):
            async with hooks.node.session.get(hooks.node.url + path) as response:
                assert response.status == 200, path

    async def test_a_refused_request_is_not_billed(self, hooks: WebhookNode) -> None:
        """A 402 never reaches the handler, so it writes and bills nothing."""
        tenant = hooks.customer("cus_a")
        await hooks.deliver(subscription_event("evt_1", int(time.time()), "cus_a", deleted=True))
        recorded = hooks.node.meter.stats.recorded
        assert (await hooks.get(tenant)).status == 402
        assert hooks.node.meter.stats.recorded == recorded

    async def test_past_due_within_the_grace_is_served(self, hooks: WebhookNode) -> None:
        """A payment that failed an hour ago (of 72 h grace) does not stop the tenant."""
        tenant = hooks.customer("cus_a")
        failed_at = int(time.time()) - HOUR
        await hooks.deliver(invoice_event("evt_1", failed_at, "cus_a", paid=False))
        assert hooks.billing(tenant)[0] == "past_due"
        assert (await hooks.get(tenant)).status == 200

    async def test_past_due_after_the_grace_gets_402_until_paid(self, hooks: WebhookNode) -> None:
        """A payment that failed 73 h ago is past the 72 h grace: 402 until invoice.paid."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        await hooks.deliver(invoice_event("evt_1", now - 73 * HOUR, "cus_a", paid=False))
        got = await hooks.get(tenant)
        assert (got.status, got.problem) == (402, "payment-required")
        assert "grace period of 72 h" in got.body["detail"]
        await hooks.deliver(invoice_event("evt_2", now, "cus_a", paid=True))
        assert (await hooks.get(tenant)).status == 200

    async def test_the_grace_is_configurable(self, make_webhook_node: WebhookNodeFactory) -> None:
        """webhooks.past_due_grace_hours sets the grace: 1 h makes a 2 h old failure a 402,
        and 0 refuses as soon as the payment fails."""
        hooks = await make_webhook_node(**{"webhooks.past_due_grace_hours": 1})
        tenant = hooks.customer("cus_a")
        failed_at = int(time.time()) - 2 * HOUR
        await hooks.deliver(invoice_event("evt_1", failed_at, "cus_a", paid=False))
        assert (await hooks.get(tenant)).status == 402
        strict = await make_webhook_node(**{"webhooks.past_due_grace_hours": 0})
        other = strict.customer("cus_b")
        await strict.deliver(invoice_event("evt_1", int(time.time()) - 1, "cus_b", paid=False))
        assert (await strict.get(other)).status == 402

    async def test_the_grace_runs_from_the_failure_not_the_delivery(
        self, hooks: WebhookNode
    ) -> None:
        """A failure delivered late (Stripe retries for days) counts from when it happened."""
        tenant = hooks.customer("cus_a")
        created = int(time.time()) - 80 * HOUR
        await hooks.deliver(subscription_event("evt_1", created, "cus_a", "past_due"))
        assert (await hooks.get(tenant)).status == 402
