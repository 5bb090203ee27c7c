"""Billing periods kept current from Stripe's webhooks: the stand-in renews a subscription
and delivers `customer.subscription.updated`, `invoice.created` and `invoice.finalized`,
signed, to the node's webhook endpoint over loopback; node.sqlite follows, each event once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_node.tenants.billing_periods import TenantPeriods
from edge_node.tenants.standing import parse_event
from edge_node.tenants.stripe_events import BillingEventStore
from sync.stripe.standin import StripeStandin
from tests.sync.billing.endpoints import webhook_endpoint
from tests.sync.billing.support import BillingNode

SECRET = "whsec_periods_0b9e4c"
DAY = 86_400
TYPES = ["customer.subscription.updated", "invoice.created", "invoice.finalized"]


@pytest.fixture
async def periods(
    node: BillingNode, standin: StripeStandin, tmp_path: Path
) -> AsyncIterator[sqlite3.Connection]:
    """The node's webhook endpoint on loopback, registered with the stand-in for the three
    period events; the node.sqlite connection it writes with."""
    async with webhook_endpoint(
        node,
        standin,
        tmp_path,
        SECRET,
        thin=False,
        enabled_events=TYPES,
        clock=standin.clock.now,  # the node's clock moves with Stripe's in this test
    ) as conn:
        yield conn


async def until(check: Callable[[], Any], within: float = 10) -> Any:
    for _ in range(int(within / 0.02)):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("not reached")


def outcomes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT type, outcome FROM webhook_events ORDER BY created, type"
    ).fetchall()


class TestPeriodWebhooks:
    async def test_a_renewal_moves_the_period_and_the_invoice_through_draft_to_open(
        self, node: BillingNode, standin: StripeStandin, periods: sqlite3.Connection
    ) -> None:
        """Across a period end: the renewal's `customer.subscription.updated` moves the
        tenant's period to the new one, `invoice.created` records the ended period's draft
        with its finalization time (period end + the grace), `invoice.finalized` marks it
        open; every event is recorded `applied`, once."""
        tenant = await node.tenant("t")
        subscription = next(iter(standin.account.subscriptions.values()))
        item = subscription["items"]["data"][0]
        first = (item["current_period_start"], item["current_period_end"])
        known = TenantPeriods(periods)
        await standin.advance(first[1] - standin.clock.now() + 60)
        assert await until(lambda: known.current(tenant) != first)
        current = known.current(tenant)
        assert current is not None
        assert current[0] == first[1]
        renewal = lambda: [i for i in known.invoices(tenant) if i.period_end == first[1]]  # noqa: E731
        (draft,) = await until(renewal)
        grace = standin.account.settings.finalization_grace_seconds
        assert (draft.period_start, draft.period_end) == first
        assert (draft.status, draft.finalizes_at) == ("draft", first[1] + grace)
        await standin.advance(grace + 60)
        await until(lambda: renewal()[0].status == "open")
        # The subscription's first invoice (made at its start, finalized an hour later under
        # send_invoice) is reported too.
        assert sorted(set(outcomes(periods))) == [
            ("customer.subscription.updated", "applied"),
            ("invoice.created", "applied"),
            ("invoice.finalized", "applied"),
        ]
        assert len(outcomes(periods)) == len(
            [e for e in standin.account.events.events if e["type"] in TYPES]
        )

    async def test_a_redelivered_or_older_event_changes_nothing(
        self, node: BillingNode, standin: StripeStandin, periods: sqlite3.Connection
    ) -> None:
        """Stripe redelivers and reorders: the same event again is a duplicate; the draft's
        `invoice.created` arriving after its `invoice.finalized` (same invoice, earlier
        `created`) is stale and leaves the invoice open."""
        tenant = await node.tenant("t")
        await standin.advance(32 * DAY)
        known = TenantPeriods(periods)
        created = [e for e in standin.account.events.events if e["type"] == "invoice.created"][-1]
        invoice_id = created["data"]["object"]["id"]
        invoice = lambda: next(i for i in known.invoices(tenant) if i.invoice_id == invoice_id)  # noqa: E731
        await until(lambda: [i for i in known.invoices(tenant) if i.invoice_id == invoice_id])
        await until(lambda: invoice().status == "open")
        store = BillingEventStore(periods)
        again = store.apply(parse_event(created))
        assert again.duplicate
        older = parse_event({**created, "id": "evt_reordered_copy"})
        assert store.apply(older).outcome == "stale"
        assert invoice().status == "open"

    async def test_the_flush_reads_periods_again_once_a_webhook_moved_them(
        self, node: BillingNode, standin: StripeStandin, periods: sqlite3.Connection
    ) -> None:
        """The flush keeps a customer's periods until its current period ends; a webhook
        recorded after it read them (here a renewal reported early, as after a billing
        cycle reset) makes the next batch read them from Stripe again."""
        tenant = await node.tenant("t")
        consumer = node.consumer()
        book = consumer._sender.periods
        customer = node.customer(tenant)
        await book.periods(customer, node.clock())
        reads = standin.calls["GET /v1/subscriptions"]
        await book.periods(customer, node.clock())
        assert standin.calls["GET /v1/subscriptions"] == reads
        await standin.advance(32 * DAY)
        await until(lambda: TenantPeriods(periods).invoices(tenant))
        await book.periods(customer, node.clock())
        assert standin.calls["GET /v1/subscriptions"] == reads + 1
