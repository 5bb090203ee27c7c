"""The Stripe stand-in follows Stripe's documented rules, driven by the official SDK."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin, price_amount
from sync.stripe.standin.forms import decode_form
from tests.sync.stripe.standin_support import EVENT, Catalog, plain_client
from tests.sync.stripe.support import StandinProcess

DAY = 86_400


async def meter_event(
    client: stripe.StripeClient,
    customer: str,
    identifier: str,
    *,
    value: int = 1,
    timestamp: int | None = None,
    key: str | None = None,
) -> Any:
    params: Any = {
        "event_name": EVENT,
        "identifier": identifier,
        "timestamp": int(time.time()) if timestamp is None else timestamp,
        "payload": {"stripe_customer_id": customer, "value": str(value)},
    }
    return await client.v1.billing.meter_events.create_async(
        params, {"idempotency_key": key} if key else None
    )


async def new_customer(client: stripe.StripeClient, tenant: str = "t-1") -> str:
    customer = await client.v1.customers.create_async(
        {"name": tenant, "metadata": {"tenant_id": tenant}}
    )
    return str(customer.id)


async def subscribed_customer(client: stripe.StripeClient, prices: Catalog) -> str:
    customer = await new_customer(client)
    await client.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": prices.per_unit}]}
    )
    return customer


class TestForms:
    def test_bracket_notation_nests_tables_and_lists(self) -> None:
        """`items[0][price]`, `metadata[k]` and `tiers[1][up_to]` decode to lists and tables."""
        form = decode_form(
            "items[0][price]=p1&items[1][price]=p2&metadata[tenant_id]=t&tiers[0][up_to]=5"
            "&tiers[1][up_to]=inf&name=a%20b"
        )
        assert form == {
            "items": [{"price": "p1"}, {"price": "p2"}],
            "metadata": {"tenant_id": "t"},
            "tiers": [{"up_to": "5"}, {"up_to": "inf"}],
            "name": "a b",
        }


class TestPricing:
    def test_graduated_tiers_charge_each_slice_at_its_rate(self) -> None:
        """Graduated pricing: units up to each tier's bound at that tier's rate, plus flat."""
        price = {
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 10, "unit_amount_decimal": "5", "flat_amount": 100},
                {"up_to": None, "unit_amount_decimal": "1", "flat_amount": 0},
            ],
        }
        assert price_amount(price, 4) == 120
        assert price_amount(price, 15) == 155


class TestAuthentication:
    async def test_a_wrong_key_gets_401(self, standin: StripeStandin) -> None:
        """A Bearer key the stand-in does not hold is refused with 401 api_key_invalid."""
        http = stripe.AIOHTTPClient()
        wrong = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": standin.url}, http_client=http
        )
        try:
            with pytest.raises(stripe.AuthenticationError) as raised:
                await wrong.v1.customers.create_async({"name": "x"})
        finally:
            await http.close_async()
        assert raised.value.http_status == 401
        assert standin.account.customers == {}


class TestIdempotency:
    async def test_same_key_same_parameters_replays_the_answer(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """A second create with the same key and parameters gets the first object back, marked
        Idempotent-Replayed, and nothing new is created."""
        params: Any = {"name": "acme", "metadata": {"tenant_id": "t-1"}}
        first = await client.v1.customers.create_async(params, {"idempotency_key": "k1"})
        again = await client.v1.customers.create_async(params, {"idempotency_key": "k1"})
        assert again.id == first.id
        assert again.last_response is not None
        assert again.last_response.headers["Idempotent-Replayed"] == "true"
        assert len(standin.account.customers) == 1

    async def test_same_key_other_parameters_is_refused(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """Reusing a key with other parameters is a 400 idempotency_error."""
        await client.v1.customers.create_async({"name": "acme"}, {"idempotency_key": "k1"})
        with pytest.raises(stripe.IdempotencyError) as raised:
            await client.v1.customers.create_async({"name": "other"}, {"idempotency_key": "k1"})
        assert raised.value.http_status == 400
        assert len(standin.account.customers) == 1

    async def test_keys_are_pruned_after_24_hours(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """Past 24 hours of the stand-in's clock a key is new again: a second object."""
        first = await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        standin.clock.advance(DAY + 1)
        again = await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        assert again.id != first.id

    async def test_a_500_is_saved_and_replayed_for_its_key(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """As Stripe does ("including 500 errors"), a 500 produced while the request executed
        is saved: the same key gets it again, replayed, even once Stripe is healthy; a new
        key does the work."""
        standin.set_switches(fail=True)
        with pytest.raises(stripe.APIError):
            await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        standin.set_switches(fail=False)
        with pytest.raises(stripe.APIError) as replayed:
            await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        assert replayed.value.headers is not None
        assert replayed.value.headers.get("Idempotent-Replayed") == "true"
        created = await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k2"})
        assert created.last_response is not None
        assert "Idempotent-Replayed" not in created.last_response.headers

    async def test_a_refused_request_saves_no_answer(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """A 4xx (here a 429) leaves the key free, as Stripe saves nothing for a request
        that did not begin executing: the retry does the work."""
        standin.set_switches(throttle=True)
        with pytest.raises(stripe.RateLimitError):
            await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        standin.set_switches(throttle=False)
        created = await client.v1.customers.create_async({"name": "a"}, {"idempotency_key": "k1"})
        assert created.last_response is not None
        assert "Idempotent-Replayed" not in created.last_response.headers


class TestSwitches:
    async def test_fail_answers_500(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """`fail` makes every API call a 500 api_error."""
        standin.set_switches(fail=True)
        with pytest.raises(stripe.APIError) as raised:
            await new_customer(client)
        assert raised.value.http_status == 500

    async def test_throttle_answers_429_with_retry_after(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """`throttle` makes every API call a 429 with a Retry-After header."""
        standin.set_switches(throttle=True)
        with pytest.raises(stripe.RateLimitError) as raised:
            await new_customer(client)
        assert raised.value.headers is not None
        assert raised.value.headers["Retry-After"] == "1"

    async def test_drop_closes_the_connection(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """`drop` closes the connection without an answer and without doing anything."""
        standin.set_switches(drop=True)
        with pytest.raises(stripe.APIConnectionError):
            await new_customer(client)
        assert standin.account.customers == {}

    async def test_hang_never_answers(self, standin: StripeStandin) -> None:
        """`hang` accepts the call and never answers: the client times out."""
        standin.set_switches(hang=True)
        async with plain_client(standin, seconds=0.5) as client:
            with pytest.raises(stripe.APIConnectionError):
                await new_customer(client)

    async def test_lose_answers_does_the_work_then_drops_the_answer(
        self, standin: StripeStandin, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """`lose_answers` records the event, then closes the connection: the caller cannot
        tell; its retry with the same Idempotency-Key gets the saved answer."""
        customer = await subscribed_customer(client, prices)
        standin.set_switches(lose_answers=True)
        with pytest.raises(stripe.APIConnectionError):
            await meter_event(client, customer, "e1", value=5, key="mk-1")
        assert standin.billed(customer) == 5
        standin.set_switches(lose_answers=False)
        replayed = await meter_event(client, customer, "e1", value=5, key="mk-1")
        assert replayed.last_response is not None
        assert replayed.last_response.headers["Idempotent-Replayed"] == "true"
        assert standin.billed(customer) == 5

    async def test_latency_delays_every_call(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """`latency` holds every call that long."""
        standin.set_switches(latency=0.2)
        started = time.monotonic()
        await new_customer(client)
        assert time.monotonic() - started >= 0.2

    async def test_calls_are_counted_by_endpoint(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """Every call counts under its method and route, failed ones included."""
        customer = await new_customer(client)
        await meter_event(client, customer, "e1")
        standin.set_switches(fail=True)
        with pytest.raises(stripe.APIError):
            await meter_event(client, customer, "e2")
        assert standin.calls["POST /v1/customers"] == 1
        assert standin.calls["POST /v1/billing/meter_events"] == 2


class TestAdminApi:
    def test_a_stand_in_process_is_driven_over_http(self, standin_process: StandinProcess) -> None:
        """Run as `python -m sync.stripe.standin`, it answers the API and its admin API:
        switches, settings, clock, state (counts, billed and metered values) and a
        customer's statement over HTTP."""
        before = standin_process.admin("state")
        assert before["switches"]["fail"] is False
        assert standin_process.admin("switches", {"fail": True, "latency": 0.01})["fail"]
        settings = standin_process.admin("settings", {"finalization_grace_seconds": 7200})
        assert settings["finalization_grace_seconds"] == 7200
        moved = standin_process.admin("clock", {"advance": DAY})
        assert moved["clock_offset"] == DAY
        client = stripe.StripeClient(
            DEFAULT_API_KEY, base_addresses={"api": standin_process.url}, max_network_retries=0
        )
        with pytest.raises(stripe.APIError):
            client.v1.customers.create({"name": "x"})
        standin_process.admin("switches", {"fail": False})
        customer = client.v1.customers.create({"name": "x"})
        meter = client.v1.billing.meters.create(
            {"display_name": "m", "event_name": EVENT, "default_aggregation": {"formula": "sum"}}
        )
        product = client.v1.products.create({"name": "p"})
        price = client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id}]}
        )
        assert subscription.start_date >= int(moved["now"])
        client.v1.billing.meter_events.create(
            {
                "event_name": EVENT,
                "identifier": "e1",
                # Inside the subscription's first period: usage from before it starts (the
                # moment above, a second earlier on a slow run) is never invoiced, as on Stripe.
                "timestamp": subscription.start_date,
                "payload": {"stripe_customer_id": str(customer.id), "value": "7"},
            }
        )
        state = standin_process.admin("state")
        assert state["billed"] == state["metered"] == {customer.id: 7}
        assert state["calls"]["POST /v1/customers"] == 2
        statement = standin_process.admin(f"statements/{customer.id}")
        assert statement["usage"]["pending"] == 7
        assert [i["billing_reason"] for i in statement["invoices"]] == ["subscription_create"]
        assert standin_process.admin("reset", {})["customers"] == []
