"""Benchmark: flush a backlog of queued usage events to the Stripe stand-in.

Run from the repository root:

    python -m bench.billing [--events 1000000] [--tenants 100] [--span-minutes 10]
                            [--concurrency 8] [--latency 0.0]

A fresh data directory gets `--tenants` tenants, each a customer of the stand-in (run as its
own process, `python -m sync.stripe.standin`, reached through the official SDK), and a queue
holding `--events` usage events spread evenly over the tenants and over the last
`--span-minutes` minutes (ending ten minutes ago, so every window is complete). Filling the
queue is not timed. Then one billing consumer works the whole backlog off, as the daemon's
would: plan into the ledger, send, commit the cursor. Reported: the wall time of the flush,
the number of Stripe meter-event calls against the bound of one per tenant and window, and
whether every customer was billed exactly what its tenant served. `--latency` makes every
stand-in call take that long (a distant Stripe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from edge_node.config import BillingConfig
from edge_node.queue import QueueSettings, WriteAheadQueue, open_queue
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.event import UsageEvent
from edge_node.usage.meter import BILLING_CONSUMER
from edge_node.usage.operations import SCORE_READ
from sync.billing.flush import BillingConsumer
from sync.billing.ledger import BillingLedger
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY
from tests.sync.stripe.support import StandinProcess

EVENT_NAME = "edge_node_requests"
SUBSCRIBED_AGO = 86_400
METER_EVENTS = "POST /v1/billing/meter_events"


async def fill_queue(
    queue: WriteAheadQueue, tenants: list[str], events: int, span_minutes: float
) -> Counter[str]:
    """Append `events` usage events round-robin over `tenants`, evenly over the span."""
    end_ms = int((time.time() - 600) * 1000)
    start_ms = end_ms - int(span_minutes * 60_000)
    step = (end_ms - start_ms) / events
    served: Counter[str] = Counter()
    pending = []
    for n in range(events):
        tenant = tenants[n % len(tenants)]
        at = start_ms + int(n * step)
        event = UsageEvent(str(uuid.uuid4()), tenant, "bench", SCORE_READ.name, 200, 1, at, "r")
        pending.append(queue.append_nowait(event.encode(), timestamp_ms=at))
        served[tenant] += 1
        if len(pending) >= 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return served


async def provision(
    registry: TenantRegistry, gateway: StripeGateway, standin: StandinProcess, count: int
) -> dict[str, str]:
    """`count` tenants, each with its customer in the stand-in, subscribed to the payg price
    a day before the backlog's usage (Stripe invoices only usage inside a subscription's
    periods): tenant id -> customer id."""
    catalog = await gateway.bootstrap(meter_event_name=EVENT_NAME)
    customers = {}
    standin.admin("clock", {"offset": -SUBSCRIBED_AGO})
    try:
        for n in range(count):
            tenant, _ = registry.create_tenant(f"bench-{n}")
            customer = await gateway.ensure_customer(tenant_id=tenant.tenant_id, name=tenant.name)
            await gateway.ensure_subscription(
                tenant_id=tenant.tenant_id,
                customer_id=customer,
                price_ids=[catalog.price_ids["payg"]],
            )
            customers[tenant.tenant_id] = registry.set_stripe_customer(tenant.tenant_id, customer)
    finally:
        standin.admin("clock", {"offset": 0})
    return customers


async def bench(args: argparse.Namespace, standin: StandinProcess, root: Path) -> dict[str, Any]:
    gateway = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=30)
    registry = TenantRegistry.open(root)
    queue = await open_queue(
        root / "queue" / "worker-0",
        consumers=(BILLING_CONSUMER,),
        settings=QueueSettings(max_bytes=4 << 30, segment_bytes=64 << 20),
    )
    try:
        customers = await provision(registry, gateway, standin, args.tenants)
        started = time.perf_counter()
        served = await fill_queue(queue, list(customers), args.events, args.span_minutes)
        fill_seconds = time.perf_counter() - started
        standin.admin("switches", {"latency": args.latency})
        calls_before = standin.admin("state")["calls"].get(METER_EVENTS, 0)
        config = BillingConfig(
            window_seconds=args.window_seconds,
            max_batches_per_round=args.max_batches_per_round,
            concurrency=args.concurrency,
        )
        consumer = BillingConsumer(
            queue,
            BillingLedger.open(root),
            gateway,
            config,
            node_id="bench",
            event_name=EVENT_NAME,
        )
        started = time.perf_counter()
        await consumer.run_until_settled()
        flush_seconds = time.perf_counter() - started
        await consumer.close()
        state = standin.admin("state")
        billed = state["billed"]
        cursor = (await queue.status()).consumers[BILLING_CONSUMER].cursor
    finally:
        await queue.close()
        registry.close()
        await gateway.close()
    windows = int(args.span_minutes * 60 // args.window_seconds) + 1
    return {
        "events": args.events,
        "tenants": args.tenants,
        "span_minutes": args.span_minutes,
        "window_seconds": args.window_seconds,
        "concurrency": args.concurrency,
        "stand_in_latency_seconds": args.latency,
        "fill_seconds": round(fill_seconds, 2),
        "flush_seconds": round(flush_seconds, 2),
        "events_per_second": round(args.events / flush_seconds),
        "stripe_calls": state["calls"].get(METER_EVENTS, 0) - calls_before,
        "max_calls_one_per_tenant_and_window": args.tenants * windows,
        "planned_ranges": consumer.stats.planned_ranges,
        "billed_exactly": all(billed.get(customers[t], 0) == n for t, n in served.items()),
        "cursor_at_end": cursor == args.events,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--span-minutes", type=float, default=10.0)
    parser.add_argument("--window-seconds", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batches-per-round", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per stand-in call")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stand-in, flush the backlog through it, stop it; the figures."""
    standin = StandinProcess.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-billing-") as root:
            result = asyncio.run(bench(args, standin, Path(root)))
    finally:
        standin.stop()
    return result


def main() -> None:
    print(json.dumps(run(parse_args()), indent=2))


if __name__ == "__main__":
    main()
