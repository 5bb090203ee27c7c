"""The stand-in's test clocks behave as Stripe documents them, through the SDK."""

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
    ready,
    subscribe,
)


class TestTestClocks:
    async def test_a_clock_is_created_retrieved_listed_and_deleted(
        self, client: stripe.StripeClient
    ) -> None:
        """A new clock is ready at its frozen_time; it is listed and retrieved; deleting it
        answers deleted: true."""
        clock = await client.v1.test_helpers.test_clocks.create_async(
            {"frozen_time": JAN_1_2026, "name": "january"}
        )
        assert (clock.object, clock.status, clock.frozen_time, clock.name) == (
            "test_helpers.test_clock",
            "ready",
            JAN_1_2026,
            "january",
        )
        assert clock.deletes_after == clock.created + 7 * DAY
        listed = await client.v1.test_helpers.test_clocks.list_async()
        assert [c.id for c in listed.data] == [clock.id]
        deleted = await client.v1.test_helpers.test_clocks.delete_async(clock.id)
        assert deleted.deleted is True

    async def test_an_advance_is_asynchronous(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """An advance answers at once with status advancing and the target in
        status_details; the clock becomes ready at the target later."""
        apply_settings(standin, {"test_clock_advance_seconds": 0.3})
        clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": JAN_1_2026})
        started = await client.v1.test_helpers.test_clocks.advance_async(
            clock.id, {"frozen_time": JAN_1_2026 + DAY}
        )
        assert started.status == "advancing"
        assert started.status_details.advancing.target_frozen_time == JAN_1_2026 + DAY
        assert started.frozen_time == JAN_1_2026
        done = await ready(client, clock.id)
        assert (done.status, done.frozen_time) == ("ready", JAN_1_2026 + DAY)

    async def test_an_advance_must_move_forward(self, client: stripe.StripeClient) -> None:
        """A frozen_time not after the clock's current one is refused."""
        clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": JAN_1_2026})
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.test_helpers.test_clocks.advance_async(
                clock.id, {"frozen_time": JAN_1_2026}
            )
        assert raised.value.param == "frozen_time"

    async def test_an_advance_reaches_two_intervals_of_the_shortest_subscription(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """With a monthly subscription on the clock one advance may go two months ahead;
        without subscriptions, two years."""
        clock, customer = await clock_customer(client)
        bare = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": JAN_1_2026})
        await advance(client, bare.id, JAN_1_2026 + 700 * DAY)
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.test_helpers.test_clocks.advance_async(
                bare.id, {"frozen_time": JAN_1_2026 + 700 * DAY + 800 * DAY}
            )
        await subscribe(client, customer, prices.per_unit)
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.test_helpers.test_clocks.advance_async(
                clock, {"frozen_time": JAN_1_2026 + 60 * DAY}
            )
        await advance(client, clock, JAN_1_2026 + 59 * DAY)

    async def test_a_clock_holds_three_customers(self, client: stripe.StripeClient) -> None:
        """A fourth customer on one test clock is refused."""
        clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": JAN_1_2026})
        for n in range(3):
            await client.v1.customers.create_async({"name": f"c{n}", "test_clock": clock.id})
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.customers.create_async({"name": "c4", "test_clock": clock.id})
        assert raised.value.param == "test_clock"

    async def test_deleting_a_clock_deletes_its_customers_and_cancels_subscriptions(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """Deleting a test clock deletes the customers on it and cancels their
        subscriptions."""
        clock, customer = await clock_customer(client)
        subscription = await subscribe(client, customer, prices.per_unit)
        await client.v1.test_helpers.test_clocks.delete_async(clock)
        assert standin.account.subscriptions[subscription.id]["status"] == "canceled"
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.customers.retrieve_async(customer)
