"""Benchmark: what one answer of the tenant's usage API costs (sync/billing/usage_view.py).

Run from the repository root:

    python -m bench.usage_view [--days 60] [--tenants 10] [--queued 10000] [--repeat 5]

Builds a data directory as a node billing at 60-second windows leaves it: for each of
`--tenants` tenants one confirmed ledger batch per window over `--days` days (the current and
the previous period known), and `--queued` usage events on the queue not yet planned, shared
by all tenants. Then times `LocalUsage.usage` for one tenant (best of `--repeat`): the
read-only snapshot of node.sqlite, the tenant's batches of two periods, and the queue tail,
which every answer reads whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

from edge_node.queue import QueueSettings, open_queue
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.event import UsageEvent
from edge_node.usage.meter import BILLING_CONSUMER
from sync.billing.ledger import BillingLedger
from sync.billing.plan import MeterEventBatch, PlannedRange
from sync.billing.usage_view import LocalUsage
from sync.stripe.periods import SubscriptionPeriods

WINDOW, DAY = 60, 86_400


def build_ledger(data_dir: Path, tenants: list[str], days: int, now: int) -> None:
    registry = TenantRegistry.open(data_dir)
    ledger = BillingLedger.open(data_dir)
    start = now - days * DAY
    for index, tenant in enumerate(tenants):
        registry.set_stripe_customer(tenant, f"cus_{index}")
        batches = tuple(
            MeterEventBatch(
                f"id-{index}-{window}",
                tenant,
                "requests",
                window,
                5,
                5,
                "worker-0",
                1,
                1,
                (("score.read", 4), ("rating.create", 1)),
            )
            for window in range(start, now, WINDOW)
        )
        ledger.record_plan(PlannedRange("worker-9", 1, 1, batches), 1)
        half = now - (days // 2) * DAY
        ledger.record_periods(f"cus_{index}", SubscriptionPeriods("s", start, start, half), start)
        ledger.record_periods(
            f"cus_{index}", SubscriptionPeriods("s", start, half, now + DAY), half
        )
    with ledger._conn:
        ledger._conn.execute("UPDATE billing_ledger SET state = 'confirmed', stamp = window_start")
    ledger.close()
    registry.close()


async def build_queue(data_dir: Path, tenants: list[str], queued: int, now: int) -> None:
    queue = await open_queue(
        data_dir / "queue" / "worker-0",
        consumers=(BILLING_CONSUMER,),
        settings=QueueSettings(max_bytes=1 << 30),
    )
    for n in range(queued):
        event = UsageEvent(
            str(uuid.uuid4()),
            tenants[n % len(tenants)],
            "bench",
            "score.read",
            200,
            1,
            (now - 30) * 1000 + n,
            "req",
        )
        await queue.append_nowait(event.encode(), timestamp_ms=(now - 30) * 1000 + n)
    await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    now = int(time.time())
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        registry = TenantRegistry.open(data_dir)
        tenants = [registry.create_tenant(f"t{n}")[0].tenant_id for n in range(args.tenants)]
        registry.close()
        build_ledger(data_dir, tenants, args.days, now)
        asyncio.run(build_queue(data_dir, tenants, args.queued, now))
        source = LocalUsage(data_dir)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            answer = source.usage(tenants[0])
            times.append(time.perf_counter() - start)
        print(
            json.dumps(
                {
                    "days": args.days,
                    "tenants": args.tenants,
                    "batches_per_tenant": args.days * DAY // WINDOW,
                    "queued": args.queued,
                    "best_ms": round(min(times) * 1000, 2),
                    "median_ms": round(sorted(times)[len(times) // 2] * 1000, 2),
                    "current_total": answer.to_json()["current_period"]["total"],
                }
            )
        )


if __name__ == "__main__":
    main()
