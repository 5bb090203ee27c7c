"""Stripe's meter error reports, delivered as thin events to the node's webhook endpoint over
loopback and fetched through the official SDK, move usage Stripe dropped out of "confirmed"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_node.errors import TransientSyncError
from edge_node.tenants.thin_events import ThinEventStore
from sync.billing.ledger import BillingLedger
from sync.billing.meter_errors import MeterErrorJob
from sync.billing.reconcile import reconcile
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import StripeStandin
from tests.sync.billing.endpoints import confirmed_then_dropped, webhook_endpoint
from tests.sync.billing.support import BillingNode

SECRET = "whsec_event_destination_5e1d"


@pytest.fixture
async def endpoint(
    node: BillingNode, standin: StripeStandin, tmp_path: Path
) -> AsyncIterator[ThinEventStore]:
    """The node's webhook endpoint on loopback, registered as the stand-in's event
    destination; the node.sqlite table its thin events are recorded in."""
    async with webhook_endpoint(node, standin, tmp_path, SECRET, thin=True) as conn:
        yield ThinEventStore(conn)


async def reported(events: ThinEventStore) -> None:
    for _ in range(200):
        if events.pending():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no thin event reached the node")


class TestMeterErrorReports:
    async def test_usage_stripe_drops_after_confirming_it_is_set_aside_and_reported(
        self,
        node: BillingNode,
        standin: StripeStandin,
        gateway: StripeGateway,
        endpoint: ThinEventStore,
    ) -> None:
        """Stripe accepts a batch, then reports it invalid in a thin event: the endpoint
        records the notification, the job fetches the report and moves the batch from
        confirmed to set aside with Stripe's code, which reconcile shows as unbilled."""
        tenant = await node.tenant("t")
        identifier = await confirmed_then_dropped(node, standin, tenant)
        await reported(endpoint)
        job = MeterErrorJob(gateway, endpoint.conn, BillingLedger.open(node.data_dir), 1.0)
        await job.run()
        await job.close()
        [(state, reason)] = node.ledger("SELECT state, set_aside_reason FROM billing_ledger")
        assert state == "set_aside"
        assert "meter_event_customer_not_found" in reason
        assert job.stats.set_aside_reported == 1
        assert job.stats.meter_error_reports == 1
        assert endpoint.pending() == []
        report = reconcile(node.data_dir, tenant_id=tenant)
        assert not report.ok
        (day,) = report.days.values()
        assert day.statement()["set_aside"] == 12
        assert day.statement()["billed_in_own_period"] == 0
        assert report.set_aside[0]["identifier"] == identifier
        assert standin.billed(node.customer(tenant)) == 0

    async def test_a_report_applied_twice_changes_nothing_more(
        self,
        node: BillingNode,
        standin: StripeStandin,
        gateway: StripeGateway,
        endpoint: ThinEventStore,
    ) -> None:
        """Applying the same report again (a crash before it was settled) moves nothing."""
        await confirmed_then_dropped(node, standin, await node.tenant("t"))
        await reported(endpoint)
        (pending,) = endpoint.pending()
        job = MeterErrorJob(gateway, endpoint.conn, BillingLedger.open(node.data_dir), 1.0)
        report = await gateway.meter_error_report(pending.event_id)
        assert job.apply(report).startswith("1 batches")
        assert job.apply(report).startswith("0 batches")
        await job.close()

    async def test_while_stripe_is_unreachable_the_report_stays_pending(
        self,
        node: BillingNode,
        standin: StripeStandin,
        gateway: StripeGateway,
        endpoint: ThinEventStore,
    ) -> None:
        """A report that cannot be fetched is not taken as nothing dropped: it stays
        pending, the job fails as transient, and the next run applies it."""
        await confirmed_then_dropped(node, standin, await node.tenant("t"))
        await reported(endpoint)
        job = MeterErrorJob(gateway, endpoint.conn, BillingLedger.open(node.data_dir), 1.0)
        standin.set_switches(drop=True)
        with pytest.raises(TransientSyncError):
            await job.run()
        assert len(endpoint.pending()) == 1
        assert node.states() == {"confirmed": 1}
        standin.set_switches(drop=False)
        await job.run()
        assert node.states() == {"set_aside": 1}
        await job.close()
