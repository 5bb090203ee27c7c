"""The stand-in takes meter events as Stripe does: some rules at once, the rest asynchronously,
reported later as thin events; driven by the official SDK."""

from __future__ import annotations

import asyncio
import time

import pytest
import stripe

from sync.stripe.standin import StripeStandin
from tests.sync.stripe.standin_support import (
    DAY,
    EVENT,
    JAN_1_2026,
    Catalog,
    Receiver,
    clock_customer,
    subscribe,
    usage,
)

SECRET = "whsec_thin"


async def wall_customer(client: stripe.StripeClient, prices: Catalog, name: str = "c") -> str:
    """A customer without a test clock, subscribed to the per-unit price."""
    customer = await client.v1.customers.create_async({"name": name})
    await subscribe(client, customer.id, prices.per_unit)
    return str(customer.id)


def now() -> int:
    return int(time.time())


class TestAcceptance:
    async def test_accepted_values_are_counted_per_customer(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Each accepted meter event adds its value to its customer's usage, and the answer
        is a billing.meter_event without an id, its payload values as strings."""
        ana, bob = (
            await wall_customer(client, prices, "ana"),
            await wall_customer(client, prices, "bob"),
        )
        answer = await usage(client, ana, "e1", 3, now())
        await usage(client, ana, "e2", 4, now())
        await usage(client, bob, "e3", 5, now())
        assert (standin.billed(ana), standin.billed(bob)) == (7, 5)
        assert answer.object == "billing.meter_event"
        assert "id" not in answer.to_dict()
        assert answer.payload["value"] == "3"

    async def test_a_duplicate_identifier_is_refused_and_not_counted(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """An identifier already recorded (under another Idempotency-Key) is Stripe's 400
        "An event already exists with identifier ...", without a code, with
        Stripe-Should-Retry: false; its value is not counted twice."""
        customer = await wall_customer(client, prices)
        await usage(client, customer, "batch-1", 10, now())
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await usage(client, customer, "batch-1", 10, now())
        assert raised.value.http_status == 400
        assert raised.value.code is None
        assert raised.value.user_message == "An event already exists with identifier batch-1."
        assert raised.value.headers is not None
        assert raised.value.headers["Stripe-Should-Retry"] == "false"
        assert standin.billed(customer) == 10

    async def test_identifiers_are_forgotten_after_24_hours(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Past the 24-hour window the same identifier is accepted and counted again: why a
        batch in doubt must not be resent blindly a day later."""
        customer = await wall_customer(client, prices)
        await usage(client, customer, "batch-1", 10, now())
        standin.clock.advance(DAY + 1)
        await usage(client, customer, "batch-1", 10, int(standin.clock.now()))
        assert standin.metered(customer) == 20

    @pytest.mark.parametrize(
        ("offset", "accepted"),
        [(-35 * DAY + 60, True), (-35 * DAY - 60, False), (240, True), (360, False)],
    )
    async def test_timestamps_within_35_days_back_and_5_minutes_ahead(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        offset: int,
        accepted: bool,
    ) -> None:
        """A timestamp more than 35 days old or more than 5 minutes ahead is a 400 saying
        which bound it broke."""
        customer = await wall_customer(client, prices)
        stamp = int(standin.clock.now()) + offset
        if accepted:
            await usage(client, customer, "e", 2, stamp)
        else:
            with pytest.raises(stripe.InvalidRequestError) as raised:
                await usage(client, customer, "e", 2, stamp)
            assert raised.value.param == "timestamp"
            if offset < 0:
                assert str(raised.value.user_message).startswith(
                    "The event timestamp cannot be more than 35 days in past. Expected a "
                    "timestamp greater than or equal to "
                )
        assert standin.metered(customer) == (2 if accepted else 0)

    async def test_the_35_day_limit_follows_the_stand_in_clock(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Jumping the stand-in's clock 36 days makes an event stamped now too old."""
        customer = await wall_customer(client, prices)
        stamped = now()
        standin.clock.advance(36 * DAY)
        with pytest.raises(stripe.InvalidRequestError):
            await usage(client, customer, "e", 1, stamped)

    async def test_a_test_clock_customers_limits_follow_its_clock(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """For a customer on a test clock the window is measured from the clock's frozen
        time: usage stamped then is accepted, usage stamped at the wall time is not."""
        _, customer = await clock_customer(client)
        await subscribe(client, customer, prices.per_unit)
        await usage(client, customer, "then", 1, JAN_1_2026)
        with pytest.raises(stripe.InvalidRequestError):
            await usage(client, customer, "wall", 1, now())

    async def test_a_missing_customer_key_is_refused_at_once(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """A payload without stripe_customer_id is a 400 naming the parameter."""
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.billing.meter_events.create_async(
                {"event_name": EVENT, "payload": {"value": "1"}}
            )
        assert raised.value.param == "payload[stripe_customer_id]"

    async def test_one_concurrent_call_per_customer_and_meter(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """While a meter event call for a customer is in flight a second one for the same
        customer gets 429 rate_limit; another customer's call goes through."""
        ana, bob = (
            await wall_customer(client, prices, "ana"),
            await wall_customer(client, prices, "bob"),
        )
        standin.set_switches(latency=0.3)
        results = await asyncio.gather(
            usage(client, ana, "a1", 1, now()),
            usage(client, ana, "a2", 1, now()),
            usage(client, bob, "b1", 1, now()),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1
        assert isinstance(refused[0], stripe.RateLimitError)
        assert (standin.metered(ana), standin.metered(bob)) == (1, 1)


class TestAsynchronousErrors:
    async def test_an_unknown_customer_is_accepted_then_reported(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """Stripe accepts a meter event for a customer it does not know, counts it nowhere,
        and later sends v1.billing.meter.error_report_triggered, a thin event whose fetched
        data names the identifier under meter_event_customer_not_found."""
        standin.account.events.add_endpoint({"url": receiver.url, "secret": SECRET}, thin=True)
        answer = await usage(client, "cus_nobody", "lost-1", 4, now())
        assert answer.identifier == "lost-1"
        (delivery,) = await receiver.wait_for(1)
        notification = client.parse_event_notification(delivery.body, delivery.signature, SECRET)
        assert notification.type == "v1.billing.meter.error_report_triggered"
        assert notification.related_object.id == prices.meter
        event = await notification.fetch_event_async()
        (error_type,) = event.data.reason.error_types
        assert error_type.code == "meter_event_customer_not_found"
        assert [s.request.identifier for s in error_type.sample_errors] == ["lost-1"]
        assert standin.metered("cus_nobody") == 0

    async def test_chosen_identifiers_can_be_dropped_after_acceptance(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """The drop_identifiers switch makes asynchronous validation refuse those events, with
        the code given: answered 200, reported, never counted or invoiced."""
        standin.account.events.add_endpoint({"url": receiver.url, "secret": SECRET}, thin=True)
        customer = await wall_customer(client, prices)
        standin.set_switches(drop_identifiers={"bad-1": "meter_event_invalid_value"})
        await usage(client, customer, "bad-1", 6, now())
        await usage(client, customer, "good-1", 2, now())
        (delivery,) = await receiver.wait_for(1)
        event = await client.v2.core.events.retrieve_async(
            client.parse_event_notification(delivery.body, delivery.signature, SECRET).id
        )
        (error_type,) = event.data.reason.error_types
        assert (error_type.code, error_type.sample_errors[0].request.identifier) == (
            "meter_event_invalid_value",
            "bad-1",
        )
        assert (standin.metered(customer), standin.billed(customer)) == (2, 2)

    async def test_an_event_name_without_a_meter_is_reported_as_no_meter_found(
        self, standin: StripeStandin, client: stripe.StripeClient, receiver: Receiver
    ) -> None:
        """Usage for an event name no meter has is accepted, then reported by
        v1.billing.meter.no_meter_found, which has no related object."""
        standin.account.events.add_endpoint({"url": receiver.url, "secret": SECRET}, thin=True)
        customer = await client.v1.customers.create_async({"name": "c"})
        await usage(client, customer.id, "orphan", 1, now())
        (delivery,) = await receiver.wait_for(1)
        notification = client.parse_event_notification(delivery.body, delivery.signature, SECRET)
        assert notification.type == "v1.billing.meter.no_meter_found"
        assert "related_object" not in delivery.body.decode()
        event = await notification.fetch_event_async()
        assert event.data.reason.error_types[0].code == "no_meter"
