"""Test support for billing: a node's data directory with real node.sqlite and a real queue."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_node.config import BillingConfig
from edge_node.queue import WriteAheadQueue, open_queue
from edge_node.tenants.model import Plan
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.event import UsageEvent
from edge_node.usage.meter import BILLING_CONSUMER
from edge_node.usage.served import ServedCounter, counts_path
from sync.backoff import Backoff
from sync.billing.flush import BillingConsumer
from sync.billing.ledger import BillingLedger
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import StripeStandin
from tests.sync.stripe.support import create_tenant

EVENT_NAME = "edge_node_requests"
NODE_ID = "edge-test"
# A provisioned tenant's subscription started this long before the test's usage, so that
# usage lies in the subscription's own period (usage from before a subscription is stamped
# at its start: tests/sync/billing/test_stripe_contract.py shows it).
SUBSCRIBED_AGO = 2 * 86_400.0


class MovableClock:
    """Wall-clock seconds (or another clock's) plus an offset a test moves, to jump past
    Stripe's time limits or step the clock back."""

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self.offset = 0.0
        self.source = source

    def __call__(self) -> float:
        return self.source() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class BillingNode:
    """node.sqlite (tenants, the ledger) and queue/worker-0, as the daemon would hold them."""

    data_dir: Path
    registry: TenantRegistry
    queue: WriteAheadQueue
    gateway: StripeGateway
    standin: StripeStandin
    clock: MovableClock = field(default_factory=MovableClock)
    monotonic: MovableClock = field(default_factory=lambda: MovableClock(time.monotonic))
    served: Counter[str] = field(default_factory=Counter)
    consumers: list[BillingConsumer] = field(default_factory=list)
    counter: ServedCounter | None = None
    catalog: BillingCatalog | None = None

    @classmethod
    async def open(
        cls, data_dir: Path, gateway: StripeGateway, standin: StripeStandin
    ) -> BillingNode:
        registry = TenantRegistry.open(data_dir)
        queue = await open_queue(data_dir / "queue" / "worker-0", consumers=(BILLING_CONSUMER,))
        counter = ServedCounter(counts_path(queue.directory))
        return cls(data_dir, registry, queue, gateway, standin, counter=counter)

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.close()
        await self.queue.close()
        if self.counter is not None:
            self.counter.close()
        self.registry.close()

    async def tenant(self, name: str, *, provisioned: bool = True, plan: Plan = "payg") -> str:
        """A tenant in the registry, with its Stripe customer unless `provisioned` is False."""
        tenant, _ = create_tenant(self.registry, name, plan=plan)
        if provisioned:
            await self.provision(tenant.tenant_id)
        return tenant.tenant_id

    async def provision(self, tenant_id: str, *, subscribed_ago: float = SUBSCRIBED_AGO) -> str:
        """The tenant's Stripe customer, subscribed to its plan's price `subscribed_ago`
        seconds back (the stand-in's clock is set back while the subscription is made)."""
        link = self.registry.stripe_link(tenant_id)
        plan: Plan = "payg" if link is None else link.plan
        customer = await self.gateway.ensure_customer(tenant_id=tenant_id, name=tenant_id)
        if self.catalog is None:
            self.catalog = await self.gateway.bootstrap(meter_event_name=EVENT_NAME)
        self.standin.clock.advance(-subscribed_ago)
        try:
            await self.gateway.ensure_subscription(
                tenant_id=tenant_id,
                customer_id=customer,
                price_ids=[self.catalog.price_ids[plan]],
            )
        finally:
            self.standin.clock.advance(subscribed_ago)
        return self.registry.set_stripe_customer(tenant_id, customer)

    def customer(self, tenant_id: str) -> str:
        link = self.registry.stripe_link(tenant_id)
        assert link is not None
        assert link.stripe_customer_id is not None
        return link.stripe_customer_id

    async def serve(
        self, tenant_id: str, count: int, *, at: float | None = None, units: int = 1
    ) -> None:
        """Append `count` usage events of `units` each, timestamped from `at` (default ten
        minutes ago, so their windows are complete) a millisecond apart, and count them as
        served, as the meter does."""
        start_ms = int(((self.clock() - 600) if at is None else at) * 1000)
        pending = []
        for n in range(count):
            event = UsageEvent(
                str(uuid.uuid4()),
                tenant_id,
                NODE_ID,
                "score.read",
                200,
                units,
                start_ms + n,
                f"req-{n}",
            )
            pending.append(self.queue.append_nowait(event.encode(), timestamp_ms=start_ms + n))
        for durable in pending:
            await durable
        if self.counter is not None:
            for n in range(count):
                self.counter.add(tenant_id, start_ms + n, units)
        self.served[tenant_id] += count * units

    def consumer(self, **settings: Any) -> BillingConsumer:
        """A fresh consumer (its own ledger connection), as after a restart."""
        hooks = {k: settings.pop(k) for k in ("on_answer", "read_chunk") if k in settings}
        consumer = BillingConsumer(
            self.queue,
            BillingLedger.open(self.data_dir),
            self.gateway,
            BillingConfig(**settings),
            node_id=NODE_ID,
            event_name=EVENT_NAME,
            clock=self.clock,
            monotonic=self.monotonic,
            backoff=Backoff(initial=0.01, maximum=0.05),
            **hooks,
        )
        self.consumers.append(consumer)
        return consumer

    def ledger(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows from node.sqlite, read on a connection of the test's own."""
        conn = sqlite3.connect(self.data_dir / "node.sqlite")
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def states(self) -> Counter[str]:
        return Counter(state for (state,) in self.ledger("SELECT state FROM billing_ledger"))

    async def cursor(self) -> int:
        return (await self.queue.status()).consumers[BILLING_CONSUMER].cursor
