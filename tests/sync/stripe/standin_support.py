"""Test support for the stand-in's own tests: a plain SDK client, a small catalog made through
the SDK, test clocks, and a webhook receiver on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import stripe
from aiohttp import web

from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin

EVENT = "api_requests"
DAY = 86_400
JAN_1_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday


@contextlib.asynccontextmanager
async def plain_client(
    standin: StripeStandin, seconds: float = 10
) -> AsyncIterator[stripe.StripeClient]:
    """A StripeClient on the stand-in: no adapter in between, no retries."""
    http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=seconds))
    try:
        yield stripe.StripeClient(
            DEFAULT_API_KEY,
            base_addresses={"api": standin.url},
            max_network_retries=0,
            http_client=http,
        )
    finally:
        await http.close_async()


@dataclass
class Catalog:
    """A sum meter on EVENT and prices on it: per unit (2 cents), graduated tiers (first 10
    units at 10 cents, then 1 cent), and a flat licensed 49.00 a month."""

    meter: str
    per_unit: str
    graduated: str
    flat: str


async def make_catalog(client: stripe.StripeClient, interval: str = "month") -> Catalog:
    meter = await client.v1.billing.meters.create_async(
        {"display_name": "requests", "event_name": EVENT, "default_aggregation": {"formula": "sum"}}
    )
    product = await client.v1.products.create_async({"name": "api"})
    metered: Any = {"interval": interval, "usage_type": "metered", "meter": meter.id}
    per_unit = await client.v1.prices.create_async(
        {"currency": "usd", "product": product.id, "unit_amount": 2, "recurring": metered}
    )
    graduated = await client.v1.prices.create_async(
        {
            "currency": "usd",
            "product": product.id,
            "recurring": metered,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 10}, {"up_to": "inf", "unit_amount": 1}],
        }
    )
    flat = await client.v1.prices.create_async(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 4900,
            "recurring": {"interval": interval},
        }
    )
    return Catalog(str(meter.id), str(per_unit.id), str(graduated.id), str(flat.id))


async def clock_customer(
    client: stripe.StripeClient, frozen_time: int = JAN_1_2026, **customer: Any
) -> tuple[str, str]:
    """A test clock frozen at `frozen_time` and a customer on it: (clock id, customer id)."""
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": frozen_time})
    made = await client.v1.customers.create_async({"name": "c", **customer, "test_clock": clock.id})
    return str(clock.id), str(made.id)


async def subscribe(client: stripe.StripeClient, customer: str, price: str, **more: Any) -> Any:
    params: Any = {"customer": customer, "items": [{"price": price}], **more}
    return await client.v1.subscriptions.create_async(params)


async def advance(client: stripe.StripeClient, clock: str, to: int) -> Any:
    """Advance a test clock and wait until Stripe says it is ready."""
    await client.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": to})
    return await ready(client, clock)


async def ready(client: stripe.StripeClient, clock: str) -> Any:
    """The test clock once its status is ready."""
    deadline = time.monotonic() + 20
    while (
        found := await client.v1.test_helpers.test_clocks.retrieve_async(clock)
    ).status != "ready":
        assert time.monotonic() < deadline, "the test clock never became ready"
        await asyncio.sleep(0.02)
    return found


async def usage(
    client: stripe.StripeClient, customer: str, identifier: str, value: int, timestamp: int
) -> Any:
    """One meter event on EVENT."""
    params: Any = {
        "event_name": EVENT,
        "identifier": identifier,
        "timestamp": timestamp,
        "payload": {"stripe_customer_id": customer, "value": str(value)},
    }
    return await client.v1.billing.meter_events.create_async(params)


async def invoices_of(client: stripe.StripeClient, customer: str) -> list[Any]:
    """The customer's invoices, oldest first."""
    listed = await client.v1.invoices.list_async({"customer": customer, "limit": 100})
    return list(reversed(listed.data))


@dataclass
class Delivery:
    path: str
    body: bytes
    signature: str


@dataclass
class Receiver:
    """An HTTP endpoint on loopback that records what is POSTed to it and answers with the
    statuses queued in `answers` (200 once they are used up)."""

    answers: list[int] = field(default_factory=list)
    received: list[Delivery] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Delivery(request.path, body, request.headers["Stripe-Signature"]))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def wait_for(self, count: int, path: str = "", seconds: float = 15) -> list[Delivery]:
        deadline = time.monotonic() + seconds
        while len(found := [d for d in self.received if d.path.startswith(path)]) < count:
            assert time.monotonic() < deadline, f"{len(found)} deliveries to {path!r}, not {count}"
            await asyncio.sleep(0.02)
        return found
