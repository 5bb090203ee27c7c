"""The Stripe adapter: meter events exactly once, idempotent provisioning, errors translated."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import stripe

from edge_node.errors import PermanentSyncError, TransientSyncError
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import MeterEventOutcome, StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.stripe.conftest import METER_EVENT

DAY = 86_400


async def send(gateway: StripeGateway, customer: str, identifier: str, value: int = 1, **kw: int):
    return await gateway.send_meter_event(
        event_name=METER_EVENT,
        customer_id=customer,
        value=value,
        timestamp=kw.get("timestamp", int(time.time())),
        identifier=identifier,
        attempt=kw.get("attempt", 1),
    )


@pytest.fixture
async def customer(gateway: StripeGateway, catalog: BillingCatalog) -> str:
    """A customer subscribed to the payg price: Stripe invoices usage only inside a
    subscription's periods."""
    made = await gateway.ensure_customer(tenant_id="tenant-1", name="acme")
    await gateway.ensure_subscription(
        tenant_id="tenant-1", customer_id=made, price_ids=[catalog.price_ids["payg"]]
    )
    return made


class TestMeterEvents:
    async def test_an_event_is_accepted_and_billed(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """A meter event is ACCEPTED and its value billed to the customer."""
        assert await send(gateway, customer, "b1", 42) is MeterEventOutcome.ACCEPTED
        assert standin.billed(customer) == 42

    async def test_resending_a_batch_bills_it_once(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """The same identifier sent again (its Idempotency-Key replayed) bills nothing more."""
        await send(gateway, customer, "b1", 42)
        assert await send(gateway, customer, "b1", 42) is MeterEventOutcome.ACCEPTED
        assert standin.billed(customer) == 42
        assert standin.calls["POST /v1/billing/meter_events"] == 2

    async def test_an_identifier_stripe_already_has_is_a_duplicate(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """An identifier Stripe recorded under another Idempotency-Key (here the SDK's random
        one) is DUPLICATE: success, not an error, and not billed again."""
        other = stripe.StripeClient(DEFAULT_API_KEY, base_addresses={"api": standin.url})
        params: Any = {
            "event_name": METER_EVENT,
            "identifier": "b1",
            "payload": {"stripe_customer_id": customer, "value": "42"},
        }
        await asyncio.to_thread(other.v1.billing.meter_events.create, params)
        assert await send(gateway, customer, "b1", 42) is MeterEventOutcome.DUPLICATE
        assert standin.billed(customer) == 42

    async def test_an_answer_lost_after_the_event_was_recorded_is_recovered(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """The connection dropped after Stripe recorded the event: the send fails transiently
        and its retry is ACCEPTED without billing twice."""
        standin.set_switches(lose_answers=True)
        with pytest.raises(TransientSyncError):
            await send(gateway, customer, "b1", 42)
        standin.set_switches(lose_answers=False)
        assert await send(gateway, customer, "b1", 42) is MeterEventOutcome.ACCEPTED
        assert standin.billed(customer) == 42

    async def test_a_timestamp_too_old_is_permanent(
        self, gateway: StripeGateway, customer: str
    ) -> None:
        """A timestamp past the 35-day limit is refused for good."""
        with pytest.raises(PermanentSyncError):
            await send(gateway, customer, "old", timestamp=int(time.time()) - 36 * DAY)


class TestErrors:
    @pytest.mark.parametrize("switch", ["fail", "drop", "hang", "throttle"])
    async def test_outages_are_transient(
        self, standin: StripeStandin, customer: str, switch: str
    ) -> None:
        """500s, dropped connections, timeouts and 429s are TransientSyncError."""
        gateway = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=0.5)
        standin.set_switches(**{switch: True})
        try:
            with pytest.raises(TransientSyncError):
                await send(gateway, customer, "b1")
        finally:
            await gateway.close()

    @pytest.mark.parametrize(
        ("switch", "not_received"),
        [("fail", False), ("drop", False), ("hang", False), ("throttle", True)],
    )
    async def test_only_failures_that_prove_nothing_was_recorded_are_not_received(
        self, standin: StripeStandin, customer: str, switch: str, not_received: bool
    ) -> None:
        """A 429 proves Stripe recorded nothing; a 500, a dropped connection or a timeout
        leave the outcome unknown."""
        gateway = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=0.5)
        standin.set_switches(**{switch: True})
        try:
            with pytest.raises(TransientSyncError) as raised:
                await send(gateway, customer, "b1")
        finally:
            await gateway.close()
        assert raised.value.not_received is not_received

    async def test_a_refused_connection_or_a_rejected_key_is_not_received(
        self, standin: StripeStandin, customer: str
    ) -> None:
        """A refused connection (nothing sent) and a 401 prove Stripe recorded nothing."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        for api_base, key in ((f"http://127.0.0.1:{port}", DEFAULT_API_KEY), (standin.url, "sk_x")):
            gateway = StripeGateway(lambda k=key: k, api_base=api_base, timeout_seconds=2)
            try:
                with pytest.raises(TransientSyncError) as raised:
                    await send(gateway, customer, "b1")
            finally:
                await gateway.close()
            assert raised.value.not_received is True

    async def test_a_429_carries_the_retry_after_hint(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """Stripe's Retry-After reaches the caller as retry_after seconds."""
        standin.set_switches(throttle=True)
        with pytest.raises(TransientSyncError) as raised:
            await send(gateway, customer, "b1")
        assert raised.value.retry_after == 1.0

    async def test_a_concurrent_call_for_the_same_customer_is_transient(
        self, standin: StripeStandin, gateway: StripeGateway, customer: str
    ) -> None:
        """The 429 for a second concurrent call on one customer and meter is retryable."""
        standin.set_switches(latency=0.2)
        results = await asyncio.gather(
            send(gateway, customer, "b1"), send(gateway, customer, "b2"), return_exceptions=True
        )
        assert sum(isinstance(r, TransientSyncError) for r in results) == 1

    async def test_an_invalid_request_is_permanent_with_stripes_code(
        self, gateway: StripeGateway
    ) -> None:
        """A 400 invalid_request_error is PermanentSyncError carrying Stripe's code (here a
        subscription for a customer Stripe does not know; a meter event for one is accepted
        and reported later, asynchronously)."""
        with pytest.raises(PermanentSyncError) as raised:
            await gateway.ensure_subscription(
                tenant_id="t", customer_id="cus_nobody", price_ids=["price_nothing"]
            )
        assert raised.value.code == "resource_missing"

    async def test_a_wrong_key_is_transient(self, standin: StripeStandin) -> None:
        """401 is transient: the data is fine and a rotated key lets it through."""
        gateway = StripeGateway(lambda: "sk_test_wrong", api_base=standin.url)
        try:
            with pytest.raises(TransientSyncError, match="401"):
                await gateway.ensure_customer(tenant_id="t", name="t")
        finally:
            await gateway.close()


class TestConfiguration:
    async def test_the_key_is_read_before_every_call(self, standin: StripeStandin) -> None:
        """A rotated key is used by the next call without rebuilding the gateway."""
        current = ["sk_test_old"]
        standin.api_keys = {"sk_test_old"}
        gateway = StripeGateway(lambda: current[0], api_base=standin.url)
        try:
            await gateway.ensure_customer(tenant_id="t1", name="a")
            standin.api_keys = {"sk_test_new"}
            current[0] = "sk_test_new"
            await gateway.ensure_customer(tenant_id="t2", name="b")
        finally:
            await gateway.close()
        assert len(standin.account.customers) == 2

    @pytest.mark.parametrize(("retries", "calls"), [(0, 1), (2, 3)])
    async def test_max_network_retries_is_what_was_set(
        self, standin: StripeStandin, retries: int, calls: int
    ) -> None:
        """With max_network_retries 0 (the default) a 500 is one call; with 2, three."""
        gateway = StripeGateway(
            lambda: DEFAULT_API_KEY, api_base=standin.url, max_network_retries=retries
        )
        standin.set_switches(fail=True)
        try:
            with pytest.raises(TransientSyncError):
                await gateway.ensure_customer(tenant_id="t", name="t")
        finally:
            await gateway.close()
        assert standin.calls["GET /v1/customers/search"] == calls

    def test_the_daemon_does_not_load_stripe_until_configured(self) -> None:
        """The daemon, the app, the CLI and the sync worker do not import the Stripe SDK:
        only the adapter does, loaded when Stripe is configured."""
        probe = (
            "import sys, edge_node.cli.main, edge_node.cli.daemon, edge_node.http.app, sync.worker;"
            "print('stripe' in sys.modules)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
        assert done.stdout.strip() == "False"


class TestProvisioningCalls:
    async def test_ensure_customer_makes_one_customer_per_tenant(
        self, standin: StripeStandin, gateway: StripeGateway
    ) -> None:
        """Asked twice, even after the Idempotency-Key was pruned, one customer per tenant,
        carrying metadata tenant_id."""
        first = await gateway.ensure_customer(tenant_id="tenant-1", name="acme")
        standin.clock.advance(DAY + 1)
        again = await gateway.ensure_customer(tenant_id="tenant-1", name="acme")
        assert again == first
        assert [c["metadata"] for c in standin.account.customers.values()] == [
            {"tenant_id": "tenant-1"}
        ]

    async def test_ensure_subscription_makes_one_subscription(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
    ) -> None:
        """Asked twice, one live subscription on the plan's price, sent as an invoice."""
        customer = await gateway.ensure_customer(tenant_id="tenant-1", name="acme")
        prices = [catalog.price_ids["tiered"]]
        first = await gateway.ensure_subscription(
            tenant_id="tenant-1", customer_id=customer, price_ids=prices
        )
        again = await gateway.ensure_subscription(
            tenant_id="tenant-1", customer_id=customer, price_ids=prices
        )
        assert again == first
        (subscription,) = standin.account.subscriptions.values()
        assert subscription["items"]["data"][0]["price"]["id"] == prices[0]
        assert subscription["collection_method"] == "send_invoice"
