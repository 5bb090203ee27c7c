"""The stand-in delivers snapshot events to webhook endpoints and thin events to event
destinations, signed and retried as Stripe does; the official SDK verifies and reads them."""

from __future__ import annotations

import asyncio
import time

import pytest
import stripe

from sync.stripe.standin import StripeStandin
from sync.stripe.standin.admin import apply_settings
from tests.sync.stripe.standin_support import (
    JAN_1_2026,
    Catalog,
    Receiver,
    advance,
    clock_customer,
    subscribe,
    usage,
)

SECRET = "whsec_standin"


class TestSnapshotWebhooks:
    async def test_billing_events_reach_a_webhook_endpoint_signed(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """A webhook endpoint gets the subscription and invoice events of a renewal, each
        verifiable with its signing secret as Stripe's SDK checks it."""
        standin.account.events.add_endpoint(
            {
                "url": receiver.url,
                "secret": SECRET,
                "enabled_events": ["customer.subscription.*", "invoice.*"],
            },
            thin=False,
        )
        clock, customer = await clock_customer(client)
        await subscribe(client, customer, prices.per_unit)
        await advance(client, clock, JAN_1_2026 + 31 * 86_400 + 3601)
        types = [
            stripe.Webhook.construct_event(d.body, d.signature, SECRET).type
            for d in receiver.received
        ]
        assert types == [
            "customer.subscription.created",
            "invoice.created",
            "invoice.finalized",
            "invoice.paid",
            "invoice.created",
            "customer.subscription.updated",
            "invoice.finalized",
            "invoice.paid",
        ]

    async def test_a_failed_delivery_is_retried_with_backoff_and_a_fresh_signature(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """An endpoint answering 500 gets the same event again, later each time, each try
        signed anew; once it answers 2xx the delivery stops."""
        apply_settings(standin, {"delivery_retry_seconds": 0.2})
        standin.account.events.add_endpoint(
            {"url": receiver.url, "secret": SECRET, "enabled_events": ["customer.created"]},
            thin=False,
        )
        receiver.answers = [500, 503]
        started = time.monotonic()
        await client.v1.customers.create_async({"name": "c"})
        first, second, third = await receiver.wait_for(3)
        assert first.body == second.body == third.body
        assert time.monotonic() - started >= 0.2 + 0.4
        # The third answer (2xx) reaches the stand-in just after the receiver has the request.
        for _ in range(500):  # at most 5 s
            if not standin.account.events.pending():
                break
            await asyncio.sleep(0.01)
        assert standin.account.events.pending() == []
        assert len(receiver.received) == 3


class TestThinEvents:
    async def test_a_thin_notification_has_no_data_and_the_event_does(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """The delivered notification is a v2.core.event with an ISO created time and a
        related object but no data; GET /v2/core/events/{id} returns it with data."""
        standin.account.events.add_endpoint({"url": receiver.url, "secret": SECRET}, thin=True)
        await usage(client, "cus_missing", "x-1", 1, int(time.time()))
        (delivery,) = await receiver.wait_for(1)
        notification = client.parse_event_notification(delivery.body, delivery.signature, SECRET)
        assert notification.object == "v2.core.event"
        assert notification.created.endswith("Z")
        assert b'"data"' not in delivery.body
        event = await client.v2.core.events.retrieve_async(notification.id)
        assert event.data.reason.error_count == 1
        assert event.related_object.url == f"/v1/billing/meters/{prices.meter}"

    async def test_a_snapshot_parser_refuses_a_thin_event(
        self,
        standin: StripeStandin,
        client: stripe.StripeClient,
        prices: Catalog,
        receiver: Receiver,
    ) -> None:
        """Thin and snapshot payloads differ in `object`, so the SDK's snapshot parser
        refuses a thin notification, as it does with Stripe's."""
        standin.account.events.add_endpoint({"url": receiver.url, "secret": SECRET}, thin=True)
        await usage(client, "cus_missing", "x-2", 1, int(time.time()))
        (delivery,) = await receiver.wait_for(1)
        with pytest.raises(ValueError):
            stripe.Webhook.construct_event(delivery.body, delivery.signature, SECRET)

    async def test_an_unknown_event_id_is_a_404(self, client: stripe.StripeClient) -> None:
        """Retrieving a thin event that does not exist is 404 resource_missing."""
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v2.core.events.retrieve_async("evt_test_nothing")
        assert raised.value.http_status == 404
