"""Billing behaviours at Stripe's documented boundaries, as the stand-in reproduces them: usage
before the subscription's start, usage held back past its period's finalization, and an
account without customer search. Each states what Stripe does and what the node achieves."""

from __future__ import annotations

from sync.billing.provisioning import Provisioner
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import StripeStandin
from tests.sync.billing.support import EVENT_NAME, BillingNode

DAY = 86_400.0


class TestUsageBeforeTheSubscription:
    async def test_usage_served_before_the_subscription_is_invoiced(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A tenant serves 30 requests in its first minute and is subscribed seconds later:
        Stripe invoices only usage inside a subscription's periods, so usage stamped with
        its window's start (before the subscription) is accepted and never invoiced."""
        tenant = await node.tenant("new", provisioned=False)
        await node.serve(tenant, 30, at=node.clock() - 30)
        customer = await node.provision(tenant, subscribed_ago=0)
        node.clock.advance(120)
        await node.consumer().run_until_settled()
        assert standin.billed(customer) == 30
        [(window, stamp, placement)] = node.ledger(
            "SELECT window_start, stamp, placement FROM billing_ledger"
        )
        assert placement == "before_subscription"
        assert stamp > window  # the original window is kept beside the stamp


class TestUsageAcrossAPeriodEnd:
    async def test_usage_held_back_past_its_periods_finalization_is_still_invoiced(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A node cut off from Stripe for 4 days across its tenant's period end: Stripe
        accepts the old usage (it is within 35 days) but never invoices a period whose
        invoice is finalized (1 hour after its end), so it must reach an open period."""
        tenant = await node.tenant("t")  # subscribed two days ago, a monthly period
        customer = node.customer(tenant)
        (subscription,) = standin.account.subscriptions.values()
        end = subscription["items"]["data"][0]["current_period_end"]
        to_two_days_before = end - standin.clock.now() - 2 * DAY
        await standin.advance(to_two_days_before)
        node.clock.advance(to_two_days_before)
        await node.serve(tenant, 12)
        await standin.advance(4 * DAY)
        node.clock.advance(4 * DAY)
        await node.consumer().run_until_settled()
        assert standin.billed(customer) == 12


class TestProvisioningWithoutSearch:
    async def test_a_customer_is_made_where_stripe_offers_no_search(
        self, gateway: StripeGateway, standin: StripeStandin
    ) -> None:
        """Stripe offers no customer search in some regions (the endpoint is a 404): the
        tenant's customer must still be found or made."""
        standin.set_switches(search_disabled=True)
        customer = await gateway.ensure_customer(tenant_id="t", name="t")
        assert customer in standin.account.customers

    async def test_tenants_are_provisioned_and_billed_where_stripe_offers_no_search(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """With customer search switched off, provisioning (run twice, as the daemon's job
        would) gives each tenant one customer and one subscription, and every unit served is
        billed."""
        standin.set_switches(search_disabled=True)
        catalog = await node.gateway.bootstrap(meter_event_name=EVENT_NAME)
        tenants = [await node.tenant(f"t{n}", provisioned=False) for n in range(3)]
        provisioner = Provisioner(node.gateway, node.registry, lambda: catalog)
        await provisioner.provision_all()
        await provisioner.provision_all()
        assert len(standin.account.customers) == 3
        assert len(standin.account.subscriptions) == 3
        for n, tenant in enumerate(tenants):
            await node.serve(tenant, 50 + n)
        await node.consumer().run_until_settled()
        for tenant in tenants:
            assert standin.billed(node.customer(tenant)) == node.served[tenant]
