"""The stand-in invoices metered usage per billing period as Stripe documents it: a draft at
the period end, finalized after the account's grace, usage arriving later never invoiced."""

from __future__ import annotations

import pytest
import stripe

from sync.stripe.standin import StripeStandin
from sync.stripe.standin.admin import apply_settings
from tests.sync.stripe.standin_support import (
    DAY,
    JAN_1_2026,
    Catalog,
    advance,
    clock_customer,
    invoices_of,
    subscribe,
    usage,
)

FEB_1 = JAN_1_2026 + 31 * DAY
HOUR = 3600


async def subscribed(
    client: stripe.StripeClient, price: str, **more: object
) -> tuple[str, str, str]:
    """(clock, customer, subscription) from January 1, 2026, on `price`."""
    clock, customer = await clock_customer(client, email="billing@example.com")
    subscription = await subscribe(client, customer, price, **more)
    return clock, customer, str(subscription.id)


class TestRenewalInvoice:
    async def test_the_period_end_makes_a_draft_with_the_periods_usage(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """At the period end a draft invoice (invoice.created) looks back on the ended period:
        its metered line counts the usage stamped in [start, end), and it finalizes at the
        period end plus the grace (1 hour by default)."""
        clock, customer, _ = await subscribed(client, prices.per_unit)
        await usage(client, customer, "in-1", 7, JAN_1_2026 + 10)
        await advance(client, clock, FEB_1 - 60)
        await usage(client, customer, "in-2", 5, FEB_1 - 1)
        await advance(client, clock, FEB_1)
        await usage(client, customer, "next-period", 100, FEB_1)
        first, renewal = await invoices_of(client, customer)
        assert (first.billing_reason, first.status) == ("subscription_create", "paid")
        assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "draft")
        assert (renewal.period_start, renewal.period_end) == (JAN_1_2026, FEB_1)
        assert renewal.automatically_finalizes_at == FEB_1 + HOUR
        (line,) = renewal.lines.data
        assert (line.quantity, line.period.start, line.period.end) == (12, JAN_1_2026, FEB_1)
        assert line.amount == 24  # 12 units at 2 cents
        types = [e["type"] for e in standin.account.events.events]
        assert "invoice.created" in types

    async def test_usage_within_the_grace_is_invoiced_and_later_usage_never(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Usage for the ended period reported during the grace is on the invoice when it
        finalizes; reported after finalization it is accepted and never invoiced, not on
        that invoice and not on the next (it still shows in event summaries)."""
        clock, customer, _ = await subscribed(client, prices.per_unit)
        await advance(client, clock, FEB_1 + 10)
        await usage(client, customer, "in-grace", 3, FEB_1 - 60)
        await advance(client, clock, FEB_1 + HOUR + 1)
        await usage(client, customer, "too-late", 4, FEB_1 - 60)
        renewal = (await invoices_of(client, customer))[1]
        assert renewal.status == "paid"
        assert renewal.lines.data[0].quantity == 3
        await advance(client, clock, FEB_1 + 28 * DAY + HOUR + 1)
        third = (await invoices_of(client, customer))[2]
        assert third.lines.data[0].quantity == 0
        assert standin.statement(customer)["usage"] == {
            "metered": 7,
            "dropped": 0,
            "invoiced": 3,
            "pending": 0,
            "late": 4,
            "outside_periods": 0,
        }
        assert standin.billed(customer) == 3

    async def test_send_invoice_invoices_stay_open_with_a_due_date(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """charge_automatically invoices are paid when finalized; send_invoice ones stay open,
        due days_until_due after finalization."""
        clock, customer, _ = await subscribed(
            client, prices.flat, collection_method="send_invoice", days_until_due=30
        )
        await advance(client, clock, FEB_1 + HOUR + 1)
        first, renewal = await invoices_of(client, customer)
        assert (renewal.status, renewal.amount_due) == ("open", 4900)
        assert renewal.due_date == FEB_1 + HOUR + 30 * DAY
        assert first.status == "open"  # the first invoice finalized an hour after the start
        assert first.lines.data[0].period.start == JAN_1_2026

    async def test_the_grace_is_an_account_setting_of_1_to_72_hours(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """The finalization grace set to 3 hours moves automatically_finalizes_at; values
        outside 1 to 72 hours are refused."""
        apply_settings(standin, {"finalization_grace_seconds": 3 * HOUR})
        with pytest.raises(ValueError, match="between"):
            apply_settings(standin, {"finalization_grace_seconds": 73 * HOUR})
        clock, customer, _ = await subscribed(client, prices.per_unit)
        await advance(client, clock, FEB_1 + 2 * HOUR)
        renewal = (await invoices_of(client, customer))[1]
        assert (renewal.status, renewal.automatically_finalizes_at) == ("draft", FEB_1 + 3 * HOUR)

    async def test_prices_are_applied_per_unit_graduated_and_flat(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """20 units cost 40 cents per unit at 2 cents, 110 cents on graduated tiers (10 at 10
        cents, 10 at 1 cent); the flat price bills 49.00 for the next period."""
        amounts = {}
        for name in ("per_unit", "graduated", "flat"):
            clock, customer, _ = await subscribed(client, getattr(prices, name))
            await usage(client, customer, f"u-{name}", 20, JAN_1_2026 + 60)
            await advance(client, clock, FEB_1 + HOUR + 1)
            amounts[name] = (await invoices_of(client, customer))[1].amount_due
        assert amounts == {"per_unit": 40, "graduated": 110, "flat": 4900}

    async def test_the_preview_shows_the_running_periods_usage(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """create_preview (Stripe's upcoming invoice) counts the usage so far in the current
        period, line period included."""
        _, customer, subscription = await subscribed(client, prices.per_unit)
        await usage(client, customer, "u1", 9, JAN_1_2026 + 60)
        preview = await client.v1.invoices.create_preview_async({"subscription": subscription})
        (line,) = preview.lines.data
        assert (line.quantity, line.period.start, line.period.end) == (9, JAN_1_2026, FEB_1)
        assert preview.amount_due == 18


class TestUsageOutsidePeriods:
    async def test_usage_before_the_start_is_never_invoiced(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Usage stamped before the subscription started lies in no period: accepted,
        counted by the meter, never invoiced."""
        clock, customer = await clock_customer(client)
        await usage(client, customer, "early", 5, JAN_1_2026 - 30)
        await subscribe(client, customer, prices.per_unit)
        await advance(client, clock, FEB_1 + HOUR + 1)
        assert (await invoices_of(client, customer))[1].lines.data[0].quantity == 0
        assert standin.statement(customer)["usage"]["outside_periods"] == 5
        assert (standin.metered(customer), standin.billed(customer)) == (5, 0)

    async def test_a_backdated_subscription_bills_earlier_usage_on_its_first_invoice(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """In flexible billing mode (the default) backdate_start_date puts the usage since
        the backdated start on the subscription's first invoice, finalized at once."""
        _, customer = await clock_customer(client, JAN_1_2026 + HOUR)
        await usage(client, customer, "early", 5, JAN_1_2026 + 30)
        await subscribe(client, customer, prices.per_unit, backdate_start_date=JAN_1_2026)
        (first,) = await invoices_of(client, customer)
        assert first.status == "paid"
        (line,) = first.lines.data
        assert (line.quantity, line.period.start, line.period.end) == (
            5,
            JAN_1_2026,
            JAN_1_2026 + HOUR,
        )
        assert standin.billed(customer) == 5

    async def test_classic_mode_bills_backdated_usage_at_the_first_renewal(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """In classic billing mode the backdated usage goes on the first renewal invoice, so
        usage reported after the subscription was made still reaches an invoice."""
        clock, customer = await clock_customer(client, JAN_1_2026 + HOUR)
        await subscribe(
            client,
            customer,
            prices.per_unit,
            backdate_start_date=JAN_1_2026,
            billing_mode={"type": "classic"},
        )
        await usage(client, customer, "early", 5, JAN_1_2026 + 30)
        await advance(client, clock, FEB_1 + 2 * HOUR + 1)
        renewal = (await invoices_of(client, customer))[1]
        assert renewal.lines.data[0].quantity == 5
        assert renewal.period_start == JAN_1_2026


class TestWebhooksHoldFinalization:
    async def test_an_unacknowledged_invoice_created_holds_the_draft(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog, receiver
    ) -> None:
        """Stripe finalizes only once every webhook endpoint answered 2xx to invoice.created
        (or 72 hours passed): an endpoint answering 500 keeps the draft past its grace."""
        standin.account.events.add_endpoint(
            {
                "url": f"{receiver.url}/wh",
                "secret": "whsec_x",
                "enabled_events": ["invoice.created"],
            },
            thin=False,
        )
        apply_settings(standin, {"delivery_retry_seconds": 60})
        clock, customer, _ = await subscribed(client, prices.per_unit)
        await receiver.wait_for(1)
        receiver.answers = [500]
        await advance(client, clock, FEB_1 + 2 * HOUR)
        assert (await invoices_of(client, customer))[1].status == "draft"
        await advance(client, clock, FEB_1 + 72 * HOUR)
        assert (await invoices_of(client, customer))[1].status == "paid"


class TestListing:
    async def test_invoices_are_listed_by_customer_subscription_and_status(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """GET /v1/invoices filters by customer, subscription and status, newest first; each
        invoice can be retrieved by id."""
        clock, customer, subscription = await subscribed(client, prices.per_unit)
        await advance(client, clock, FEB_1 + 10)
        drafts = await client.v1.invoices.list_async(
            {"subscription": subscription, "status": "draft"}
        )
        (draft,) = drafts.data
        assert (await client.v1.invoices.retrieve_async(draft.id)).status == "draft"
        everything = await client.v1.invoices.list_async({"customer": customer})
        assert [i.billing_reason for i in everything.data] == [
            "subscription_cycle",
            "subscription_create",
        ]
        assert draft.parent.subscription_details.subscription == subscription
