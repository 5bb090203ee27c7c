"""The stand-in's subscriptions keep billing periods as Stripe documents them, driven by test
clocks through the official SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import stripe

from sync.stripe.standin import StripeStandin
from tests.sync.stripe.standin_support import (
    DAY,
    JAN_1_2026,
    Catalog,
    advance,
    clock_customer,
    invoices_of,
    make_catalog,
    subscribe,
)


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


class TestPeriods:
    async def test_periods_are_on_the_items_monthly_from_the_anchor(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Since API 2025-03-31 the period is on each subscription item (none on the
        subscription), a month from the billing cycle anchor, which defaults to the start."""
        _, customer = await clock_customer(client)
        subscription = await subscribe(client, customer, prices.per_unit)
        (item,) = subscription["items"].data
        assert (item.current_period_start, item.current_period_end) == (
            JAN_1_2026,
            utc(2026, 2, 1),
        )
        assert subscription.billing_cycle_anchor == JAN_1_2026
        assert "current_period_end" not in subscription.to_dict()

    async def test_an_anchor_on_the_31st_bills_on_the_last_day_of_shorter_months(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """A monthly subscription anchored on January 31 renews February 28, then March 31."""
        clock, customer = await clock_customer(client, utc(2026, 1, 31, 12))
        subscription = await subscribe(client, customer, prices.per_unit)
        assert subscription["items"].data[0].current_period_end == utc(2026, 2, 28, 12)
        await advance(client, clock, utc(2026, 3, 1))
        again = await client.v1.subscriptions.retrieve_async(subscription.id)
        item = again["items"].data[0]
        assert (item.current_period_start, item.current_period_end) == (
            utc(2026, 2, 28, 12),
            utc(2026, 3, 31, 12),
        )

    async def test_a_future_anchor_makes_a_short_first_period(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """With billing_cycle_anchor on the 1st of next month, the first period ends there;
        an anchor past the next natural billing date is refused."""
        _, customer = await clock_customer(client, utc(2026, 1, 15))
        subscription = await subscribe(
            client, customer, prices.per_unit, billing_cycle_anchor=utc(2026, 2, 1)
        )
        item = subscription["items"].data[0]
        assert (item.current_period_start, item.current_period_end) == (
            utc(2026, 1, 15),
            utc(2026, 2, 1),
        )
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await subscribe(client, customer, prices.per_unit, billing_cycle_anchor=utc(2026, 3, 1))
        assert raised.value.param == "billing_cycle_anchor"

    async def test_weekly_prices_make_weekly_periods(self, client: stripe.StripeClient) -> None:
        """A price's interval sets the period: a weekly price renews every 7 days."""
        weekly = await make_catalog(client, interval="week")
        _, customer = await clock_customer(client)
        subscription = await subscribe(client, customer, weekly.per_unit)
        assert subscription["items"].data[0].current_period_end == JAN_1_2026 + 7 * DAY

    async def test_periods_roll_over_with_an_updated_event(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """When a period ends, the items move to the next period and
        customer.subscription.updated carries the old period in previous_attributes."""
        clock, customer = await clock_customer(client)
        subscription = await subscribe(client, customer, prices.per_unit)
        await advance(client, clock, utc(2026, 2, 1, 0, 30))
        (updated,) = [
            e for e in standin.account.events.events if e["type"] == "customer.subscription.updated"
        ]
        item = updated["data"]["object"]["items"]["data"][0]
        assert (item["current_period_start"], item["current_period_end"]) == (
            utc(2026, 2, 1),
            utc(2026, 3, 1),
        )
        before = updated["data"]["previous_attributes"]["items"]["data"][0]
        assert before["current_period_end"] == utc(2026, 2, 1)
        assert updated["data"]["object"]["id"] == subscription.id

    async def test_wall_clock_customers_follow_the_stand_in_clock(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """A customer without a test clock is billed on the stand-in's clock: moving it past
        the period end renews the subscription and makes the invoice."""
        customer = await client.v1.customers.create_async({"name": "wall"})
        subscription = await subscribe(client, customer.id, prices.per_unit)
        end = subscription["items"].data[0].current_period_end
        await standin.advance(end - standin.clock.now() + 10)
        invoices = await invoices_of(client, customer.id)
        assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_cycle"]
        assert invoices[1].period_end == end


class TestCollection:
    async def test_send_invoice_needs_days_until_due(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """`send_invoice` requires days_until_due; charge_automatically refuses it."""
        _, customer = await clock_customer(client)
        with pytest.raises(stripe.InvalidRequestError) as missing:
            await subscribe(client, customer, prices.per_unit, collection_method="send_invoice")
        assert missing.value.param == "days_until_due"
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await subscribe(client, customer, prices.per_unit, days_until_due=30)
        assert refused.value.param == "days_until_due"

    async def test_mixed_intervals_are_refused(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Prices of one subscription must share their interval."""
        weekly = await weekly_price(client)
        _, customer = await clock_customer(client)
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.subscriptions.create_async(
                {"customer": customer, "items": [{"price": prices.flat}, {"price": weekly}]}
            )
        assert "interval" in str(raised.value.user_message)


async def weekly_price(client: stripe.StripeClient) -> str:
    """A weekly licensed price on a product of its own."""
    product = await client.v1.products.create_async({"name": "weekly"})
    price = await client.v1.prices.create_async(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 100,
            "recurring": {"interval": "week"},
        }
    )
    return str(price.id)
