"""Partitions between the node and Stripe, each ending with invoiced + carried forward + set
aside == served, exactly: Stripe's invoices (the stand-in, through the official SDK) against
the node's reconcile statement, after the clocks have moved past the open period's
finalization so that everything billed is on a finalized invoice.

Each tenant's customer lives on a Stripe test clock, which bills it (periods, invoices,
finalization, the 35-day limit), and the node's clock moves in step with it. The stand-in's
own clock is Stripe's wall time (its identifier window and idempotency keys follow it, never a
test clock): it moves with the partitions, as they are real time, but not when a test jumps
the test clock to a period's end (a test clock is deleted after 7 days of Stripe's time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stripe

from edge_node.errors import TransientSyncError
from sync.billing.ledger_batch import LedgerBatch
from sync.billing.reconcile import Reconciliation, reconcile, stripe_invoices
from sync.billing.statements import PeriodStatement
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from sync.stripe.standin.statements import usage_totals
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.sync.billing.endpoints import confirmed_then_dropped
from tests.sync.billing.support import EVENT_NAME, BillingNode
from tests.sync.stripe.standin_support import advance, clock_customer, plain_client
from tests.sync.stripe.support import create_tenant

MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0
METER_EVENTS = "POST /v1/billing/meter_events"


class Crash(Exception):
    """The process dying between Stripe's answer and the ledger write."""


@dataclass
class Clocks:
    """A Stripe test clock with the tenant's customer on it, subscribed two days before now,
    and the stand-in's and the node's clocks, moved together."""

    node: BillingNode
    standin: StripeStandin
    client: stripe.StripeClient
    clock: str = ""
    frozen: int = 0

    async def tenant(self, name: str) -> str:
        """A tenant whose customer is on a new test clock, subscribed to payg two days ago."""
        tenant, _ = create_tenant(self.node.registry, name)
        self.frozen = int(self.standin.clock.now() - 2 * DAY)
        self.clock, customer = await clock_customer(
            self.client, self.frozen, metadata={"tenant_id": tenant.tenant_id}
        )
        self.node.registry.set_stripe_customer(tenant.tenant_id, customer)
        catalog = await self.node.gateway.bootstrap(meter_event_name=EVENT_NAME)
        await self.node.gateway.ensure_subscription(
            tenant_id=tenant.tenant_id, customer_id=customer, price_ids=[catalog.price_ids["payg"]]
        )
        self.frozen = int(self.standin.clock.now())
        await advance(self.client, self.clock, self.frozen)
        return tenant.tenant_id

    async def move(self, seconds: float, *, wall: bool = True) -> None:
        """Time passes for the test clock and the node, and (`wall`) for Stripe itself."""
        self.frozen += int(seconds)
        await advance(self.client, self.clock, self.frozen)
        if wall:
            await self.standin.advance(int(seconds))
        self.node.clock.advance(int(seconds))
        self.node.monotonic.advance(int(seconds))

    def period_end(self) -> int:
        (subscription,) = self.standin.account.subscriptions.values()
        return int(subscription["items"]["data"][0]["current_period_end"])

    async def to_before_period_end(self, seconds: float) -> None:
        await self.move(self.period_end() - self.frozen - seconds, wall=False)

    async def past_the_period_end(self) -> None:
        """Past the open period's end and its invoice's finalization (grace: at most 3 h)."""
        await self.move(self.period_end() - self.frozen + 4 * HOUR, wall=False)


@pytest.fixture
async def clocks(node: BillingNode, standin: StripeStandin) -> AsyncIterator[Clocks]:
    async with plain_client(standin) as client:
        yield Clocks(node, standin, client)


async def partitioned(clocks: Clocks, seconds: float, *, wall: bool = True) -> None:
    """Stripe unreachable (every connection cut) for `seconds`, the node trying all along."""
    node, standin = clocks.node, clocks.standin
    standin.set_switches(drop=True)
    consumer = node.consumer()
    with pytest.raises(TransientSyncError):
        await consumer.run()
    standin.set_switches(drop=False)
    await clocks.move(seconds, wall=wall)
    standin.set_switches(drop=True)
    await asyncio.sleep(consumer.next_retry_in() or 0)
    with contextlib.suppress(TransientSyncError):  # nothing to call if all is set aside
        await consumer.run()
    standin.set_switches(drop=False)


async def statements(clocks: Clocks, tenant: str) -> tuple[Reconciliation, list[PeriodStatement]]:
    """Reconcile for the tenant, with Stripe's invoices read through the official SDK, once
    the open period has ended and its invoice is finalized; its statements per period."""
    node = clocks.node
    await clocks.past_the_period_end()
    invoices = await stripe_invoices(node.data_dir, node.gateway, EVENT_NAME, tenant_id=tenant)
    report = reconcile(node.data_dir, tenant_id=tenant, invoices=invoices)
    return report, report.periods.sorted()


def assert_accounted(
    clocks: Clocks, tenant: str, report: Reconciliation, periods: list[PeriodStatement], served: int
) -> None:
    """Per period, invoiced + carried forward + set aside == served (less what was carried in
    from an earlier period): nothing queued or sent, no difference, Stripe's invoice holding
    what the node confirmed into the period; nothing late or outside the subscription."""
    assert report.periods.read_stripe
    for period in periods:
        assert period.start is not None, period  # no usage outside a known period
        assert (period.queued, period.sent, period.difference) == (0, 0, 0), period
        assert period.invoice is not None, period
        assert period.invoice.final, period
        assert period.stripe_difference == 0, period
        assert period.unexplained == 0, period
        invoiced = period.invoiced or 0
        assert invoiced - period.carried_in + period.carried_forward + period.set_aside == (
            period.served
        ), period
    assert sum(p.served for p in periods) == served
    stripe = usage_totals(clocks.standin.account).get(clocks.node.customer(tenant), {})
    assert sum(p.invoiced or 0 for p in periods) == int(stripe.get("invoiced", 0))
    assert stripe.get("late", 0) == 0
    assert stripe.get("outside_periods", 0) == 0
    assert stripe.get("pending", 0) == 0


def serving_period(periods: list[PeriodStatement]) -> PeriodStatement:
    """The one period in which usage was served."""
    (serving,) = [p for p in periods if p.served]
    return serving


class TestPartitions:
    async def test_thirty_minutes(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """Cut off for 30 minutes inside a period: the usage is billed in its own period."""
        tenant = await clocks.tenant("t")
        await node.serve(tenant, 20)
        await partitioned(clocks, 30 * MINUTE)
        await node.consumer().run_until_settled()
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 20)
        served = serving_period(periods)
        assert (served.confirmed, served.carried_forward, served.invoiced) == (20, 0, 20)

    async def test_two_hours_across_a_period_end_with_a_one_hour_grace(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """Cut off for 2 hours from 20 minutes before the period ends: the ended period's
        invoice is finalized an hour after its end, so the usage is carried forward into
        the open period and invoiced there, never confirmed into a closed invoice."""
        tenant = await clocks.tenant("t")
        await clocks.to_before_period_end(10 * MINUTE)
        await node.serve(tenant, 15)  # ten minutes before "now": 20 before the end
        await partitioned(clocks, 2 * HOUR)
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert consumer.stats.carried_forward == 1
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 15)
        served = serving_period(periods)
        assert (served.carried_forward, served.invoiced) == (15, 0)
        (later,) = [p for p in periods if p.carried_in]
        assert (later.start, later.carried_in, later.invoiced) == (served.end, 15, 15)

    async def test_two_hours_across_a_period_end_with_a_three_hour_grace(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """With a 3-hour finalization grace the ended period's invoice is still a draft two
        hours after the end: the usage reaches its own period's invoice."""
        standin.account.settings.set_grace(int(3 * HOUR))
        tenant = await clocks.tenant("t")
        await clocks.to_before_period_end(10 * MINUTE)
        await node.serve(tenant, 15)
        await partitioned(clocks, 2 * HOUR)
        await node.consumer().run_until_settled()
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 15)
        served = serving_period(periods)
        assert (served.carried_forward, served.invoiced) == (0, 15)

    async def test_25_hours_with_the_batch_accepted_and_the_ledger_write_lost(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """Stripe accepted the batch and the process died before writing so; 25 hours later
        Stripe no longer dedups the identifier, so its meter event summary settles it: it
        landed, it is confirmed, and it is not sent a second time."""
        tenant = await clocks.tenant("t")
        await node.serve(tenant, 12)

        async def crash(batch: LedgerBatch) -> None:
            raise Crash("killed after Stripe's answer")

        with pytest.raises(ExceptionGroup):
            await node.consumer(on_answer=crash).run_round()
        assert node.states() == {"sent": 1}
        await clocks.move(25 * HOUR)
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert consumer.stats.resolved_landed == 1
        assert standin.calls[METER_EVENTS] == 1
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 12)
        assert serving_period(periods).invoiced == 12

    async def test_25_hours_with_the_send_lost_before_stripe(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """The send was cut before Stripe did anything, and Stripe stayed out of reach for
        25 hours: its summary shows nothing landed, so the batch goes again under a fresh
        identifier and is invoiced once."""
        tenant = await clocks.tenant("t")
        await node.serve(tenant, 12)
        standin.set_switches(drop=True, only=METER_EVENTS)
        with pytest.raises(TransientSyncError):
            await node.consumer().run()
        assert node.states() == {"sent": 1}
        standin.set_switches(only="")
        await partitioned(clocks, 25 * HOUR)
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert consumer.stats.resolved_resent == 1
        [(identifier, sent_as)] = node.ledger(
            "SELECT identifier, stripe_identifier FROM billing_ledger"
        )
        assert sent_as is not None
        assert sent_as != identifier
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 12)

    async def test_four_days_across_a_period_end(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """Cut off for 4 days from 2 days before the period ends: the usage is carried
        forward into the open period (Stripe would accept it with its own timestamp and
        never invoice it)."""
        tenant = await clocks.tenant("t")
        await clocks.to_before_period_end(2 * DAY)
        await node.serve(tenant, 12)
        await partitioned(clocks, 4 * DAY)
        await node.consumer().run_until_settled()
        report, periods = await statements(clocks, tenant)
        assert report.ok
        assert_accounted(clocks, tenant, report, periods, 12)
        assert serving_period(periods).carried_forward == 12

    async def test_36_days_sets_aside_and_reports(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks
    ) -> None:
        """Cut off for 36 days, beyond the 35 days Stripe accepts: the usage is set aside
        and reported, the only scenario where anything is."""
        tenant = await clocks.tenant("t")
        await node.serve(tenant, 8)
        await partitioned(clocks, 36 * DAY, wall=False)  # the test clock would be deleted
        await node.consumer().run_until_settled()
        assert node.states() == {"set_aside": 1}
        report, periods = await statements(clocks, tenant)
        assert not report.ok  # set aside: reported, and the command exits 1
        assert_accounted(clocks, tenant, report, periods, 8)
        served = serving_period(periods)
        assert (served.set_aside, served.invoiced, served.unexplained) == (8, 0, 0)
        assert "35-day" in report.set_aside[0]["reason"]

    async def test_usage_stripe_dropped_after_accepting_is_an_unexplained_difference(
        self, node: BillingNode, standin: StripeStandin, clocks: Clocks, tmp_path: Path
    ) -> None:
        """Stripe accepts the batch and drops it afterwards, its error report never reaching
        the node: the node says confirmed, the period's invoice holds nothing, and `billing
        reconcile` (reading the invoices through the official SDK) shows the units as an
        unexplained Stripe difference and exits 1, where the node's records alone agree."""
        tenant = await clocks.tenant("t")
        await confirmed_then_dropped(node, standin, tenant)
        await clocks.past_the_period_end()
        key_file = tmp_path / "stripe.key"
        key_file.write_text(DEFAULT_API_KEY + "\n")
        env = clean_environment(
            EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
            EDGE_NODE_STRIPE_API_BASE=standin.url,
            EDGE_NODE_STRIPE_METER_EVENT_NAME=EVENT_NAME,
        )
        command = [*edge_node_command(), "--data-dir", str(node.data_dir), "billing", "reconcile"]
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        document = json.loads(done.stdout)
        (period,) = [p for p in document["periods"] if p["served"]]
        assert (period["served"], period["confirmed"], period["difference"]) == (12, 12, 0)
        assert (period["invoiced"], period["stripe_difference"]) == (0, -12)
        assert period["unexplained"] == 12
        table = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert table.returncode == 1
        assert "NOT in order" in table.stdout
        offline = reconcile(node.data_dir, tenant_id=tenant)
        assert offline.ok  # without Stripe's invoices nothing shows the loss


class TestTwoNodes:
    @pytest.mark.parametrize(("slots", "decided"), [(2, True), (1, False)])
    async def test_one_node_unknown_outcome_beside_another_node_usage(
        self,
        node: BillingNode,
        standin: StripeStandin,
        clocks: Clocks,
        tmp_path: Path,
        slots: int,
        decided: bool,
    ) -> None:
        """Two nodes bill one customer in the same minute; the first crashes after Stripe
        accepted its batch and settles it 25 hours later from Stripe's summaries. With a
        stamp slot each (billing.stamp_slots = 2) the minute of its stamp holds its usage
        alone: it landed, confirmed, billed once. Sharing every minute (one slot), the
        summary also holds the other node's usage and cannot decide: set aside."""
        tenant = await clocks.tenant("t")
        other = await BillingNode.open(tmp_path / "other", node.gateway, standin)
        try:
            elsewhere, _ = create_tenant(other.registry, "t-elsewhere")
            other.registry.set_stripe_customer(elsewhere.tenant_id, node.customer(tenant))
            at = node.clock() - 10 * MINUTE
            await node.serve(tenant, 12, at=at)
            await other.serve(elsewhere.tenant_id, 5, at=at)

            async def crash(batch: LedgerBatch) -> None:
                raise Crash("killed after Stripe's answer")

            with pytest.raises(ExceptionGroup):
                await node.consumer(on_answer=crash, stamp_slot=0, stamp_slots=slots).run_round()
            await other.consumer(stamp_slot=slots - 1, stamp_slots=slots).run_until_settled()
            assert other.states() == {"confirmed": 1}
        finally:
            await other.close()
        await clocks.move(25 * HOUR)
        consumer = node.consumer(stamp_slot=0, stamp_slots=slots)
        await consumer.run_until_settled()
        assert standin.calls[METER_EVENTS] == 2  # one send per node, none repeated
        if decided:
            assert (consumer.stats.resolved_landed, node.states()) == (1, {"confirmed": 1})
        else:
            assert node.states() == {"set_aside": 1}
            [(reason,)] = node.ledger("SELECT set_aside_reason FROM billing_ledger")
            assert "17 units" in reason
