"""The stand-in answers meter event summaries as Stripe documents them, through the SDK."""

from __future__ import annotations

import pytest
import stripe

from tests.sync.stripe.standin_support import (
    DAY,
    JAN_1_2026,
    Catalog,
    advance,
    clock_customer,
    subscribe,
    usage,
)

HOUR = 3600


async def customer_with_usage(client: stripe.StripeClient, prices: Catalog) -> tuple[str, str]:
    """A customer with 3 units at 00:10 and 4 at 02:30 on January 1, 2026."""
    clock, customer = await clock_customer(client)
    await subscribe(client, customer, prices.per_unit)
    await advance(client, clock, JAN_1_2026 + 3 * HOUR)
    await usage(client, customer, "a", 3, JAN_1_2026 + 600)
    await usage(client, customer, "b", 4, JAN_1_2026 + 2 * HOUR + 1800)
    return clock, customer


class TestSummaries:
    async def test_one_summary_for_the_range_or_one_per_hour_newest_first(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Without a grouping window one summary covers [start_time, end_time); with
        value_grouping_window=hour there is one per hour, the newest first."""
        _, customer = await customer_with_usage(client, prices)
        query: dict[str, object] = {
            "customer": customer,
            "start_time": JAN_1_2026,
            "end_time": JAN_1_2026 + 3 * HOUR,
        }
        (whole,) = (
            await client.v1.billing.meters.event_summaries.list_async(prices.meter, query)
        ).data
        assert (whole.object, whole.aggregated_value) == ("billing.meter_event_summary", 7.0)
        hourly = await client.v1.billing.meters.event_summaries.list_async(
            prices.meter, {**query, "value_grouping_window": "hour"}
        )
        assert [(s.start_time, s.aggregated_value) for s in hourly.data] == [
            (JAN_1_2026 + 2 * HOUR, 4.0),
            (JAN_1_2026 + HOUR, 0.0),
            (JAN_1_2026, 3.0),
        ]

    async def test_summaries_page_with_limit_and_starting_after(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """`limit` pages the windows and `starting_after` continues after a summary's id."""
        _, customer = await customer_with_usage(client, prices)
        query: dict[str, object] = {
            "customer": customer,
            "start_time": JAN_1_2026,
            "end_time": JAN_1_2026 + 3 * HOUR,
            "value_grouping_window": "hour",
            "limit": 2,
        }
        first = await client.v1.billing.meters.event_summaries.list_async(prices.meter, query)
        assert first.has_more
        rest = await client.v1.billing.meters.event_summaries.list_async(
            prices.meter, {**query, "starting_after": first.data[-1].id}
        )
        assert [s.aggregated_value for s in rest.data] == [3.0]
        assert not rest.has_more

    @pytest.mark.parametrize(
        ("start", "window"),
        [(JAN_1_2026 + 30, None), (JAN_1_2026 + 60, "hour"), (JAN_1_2026 + HOUR, "day")],
    )
    async def test_misaligned_times_are_refused(
        self, client: stripe.StripeClient, prices: Catalog, start: int, window: str | None
    ) -> None:
        """Times must fall on minutes; with hourly grouping on hours, with daily on UTC days."""
        _, customer = await clock_customer(client)
        query: dict[str, object] = {
            "customer": customer,
            "start_time": start,
            "end_time": JAN_1_2026 + DAY,
        }
        if window:
            query["value_grouping_window"] = window
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.billing.meters.event_summaries.list_async(prices.meter, query)
        assert raised.value.param == "start_time"

    async def test_late_usage_is_summarized_though_never_invoiced(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Usage that arrived after its period's invoice was finalized is in the summary of
        its time, while the invoice never counts it: summaries and invoices can differ."""
        clock, customer = await clock_customer(client)
        await subscribe(client, customer, prices.per_unit)
        end = JAN_1_2026 + 31 * DAY
        await advance(client, clock, end + 2 * HOUR)
        await usage(client, customer, "late", 5, end - HOUR)
        (summary,) = (
            await client.v1.billing.meters.event_summaries.list_async(
                prices.meter, {"customer": customer, "start_time": JAN_1_2026, "end_time": end}
            )
        ).data
        assert summary.aggregated_value == 5.0
        invoices = await client.v1.invoices.list_async({"customer": customer, "status": "paid"})
        renewal = next(i for i in invoices.data if i.billing_reason == "subscription_cycle")
        assert renewal.lines.data[0].quantity == 0
