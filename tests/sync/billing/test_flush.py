"""The usage flush against the Stripe stand-in, through the official SDK: billed equals served."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket

import pytest

from edge_node.errors import TransientSyncError
from edge_node.queue import CorruptRecord, open_queue
from edge_node.usage.meter import BILLING_CONSUMER
from sync.billing.flush import BillingConsumer
from sync.billing.ledger_batch import LedgerBatch
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.billing.support import EVENT_NAME, BillingNode

METER_EVENTS = "POST /v1/billing/meter_events"
DAY = 86400.0


def window_start(node: BillingNode, ago: float) -> float:
    """The start of a 60-second window about `ago` seconds back, plus a second."""
    return (node.clock() - ago) // 60 * 60 + 1


def assert_billed_as_served(node: BillingNode, standin: StripeStandin) -> None:
    billed = {tenant: standin.billed(node.customer(tenant)) for tenant in node.served}
    assert billed == dict(node.served)


async def one_failed_run(
    node: BillingNode, standin: StripeStandin, switch: str, *, units: int = 12
) -> tuple[str, BillingConsumer]:
    """A tenant's `units` of usage, and a consumer whose first run failed while the
    stand-in's `switch` was on (lose_answers: Stripe recorded the batch, the answer was
    lost); the switch is off again."""
    tenant = await node.tenant("t")
    await node.serve(tenant, units, at=window_start(node, 900))
    consumer = node.consumer()
    standin.set_switches(**{switch: True}, only=METER_EVENTS)
    with pytest.raises(TransientSyncError):
        await consumer.run()
    standin.set_switches(**{switch: False})
    return tenant, consumer


class TestNormalRunning:
    async def test_each_customer_is_billed_exactly_the_units_served(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Three tenants' usage over two windows is billed to the unit, with one meter event
        per tenant and window, and the cursor then passes every record."""
        tenants = [await node.tenant(f"tenant-{n}") for n in range(3)]
        first, second = window_start(node, 3600), window_start(node, 3480)
        for at in (first, second):
            for n, tenant in enumerate(tenants):
                await node.serve(tenant, 40 + n, at=at, units=n + 1)
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert_billed_as_served(node, standin)
        assert standin.calls[METER_EVENTS] == 6
        assert node.states() == {"confirmed": 6}
        assert await node.cursor() == node.queue.last_seq

    async def test_a_window_is_sent_once_it_is_complete(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Usage in the window still running waits; once the clock is past the window's end
        it is sent, as one meter event, with the later usage of that window included."""
        tenant = await node.tenant("live")
        await node.serve(tenant, 5, at=node.clock())
        consumer = node.consumer()
        await consumer.run_round()
        await node.serve(tenant, 7, at=node.clock())
        await consumer.run_round()
        assert standin.calls[METER_EVENTS] == 0
        node.clock.advance(65)
        await consumer.run_round()
        assert standin.calls[METER_EVENTS] <= 2  # two only if the events straddled a minute
        assert_billed_as_served(node, standin)

    async def test_a_backlog_read_in_chunks_still_makes_one_event_per_tenant_and_window(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Reads that cut a window in the middle do not split it: the planner waits for the
        next window before planning one."""
        tenants = [await node.tenant(f"t{n}") for n in range(2)]
        for minutes in range(4):
            for tenant in tenants:
                await node.serve(tenant, 30, at=window_start(node, 3600 - 60 * minutes))
        await node.consumer(read_chunk=7).run_until_settled()
        assert_billed_as_served(node, standin)
        assert standin.calls[METER_EVENTS] == 8

    async def test_each_customers_calls_are_serialized(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """With slow answers and many windows per customer, no call is ever refused for a
        second concurrent call on the same customer: the flush makes them one at a time."""
        tenants = [await node.tenant(f"t{n}") for n in range(3)]
        for minutes in range(5):
            for tenant in tenants:
                await node.serve(tenant, 3, at=window_start(node, 3600 - 60 * minutes))
        standin.set_switches(latency=0.02)
        consumer = node.consumer(concurrency=8)
        await consumer.run_until_settled()
        assert consumer.stats.transient_failures == 0
        assert standin.calls[METER_EVENTS] == 15
        assert_billed_as_served(node, standin)


class TestCustomers:
    async def test_usage_of_a_tenant_without_customer_waits_planned(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A tenant not provisioned yet has its batch planned but not sent, and the cursor
        stays before it; once the customer exists the batch is sent and the cursor moves."""
        ready = await node.tenant("ready")
        pending = await node.tenant("pending", provisioned=False)
        at = window_start(node, 600)
        await node.serve(ready, 4, at=at)
        await node.serve(pending, 6, at=at)
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert node.states() == {"confirmed": 1, "planned": 1}
        assert await node.cursor() == 0
        await node.provision(pending)
        await consumer.run_until_settled()
        assert node.states() == {"confirmed": 2}
        assert await node.cursor() == node.queue.last_seq
        assert_billed_as_served(node, standin)


class TestStripeDown:
    @pytest.mark.parametrize("switch", ["fail", "drop", "hang", "lose_answers", "throttle"])
    async def test_billing_resumes_by_itself_and_bills_exactly_once(
        self, node: BillingNode, standin: StripeStandin, switch: str
    ) -> None:
        """While Stripe fails (500), drops connections, hangs, loses its answers or throttles,
        every round fails as transient and nothing is set aside; once it is back the same
        batches go through and each customer is billed exactly what was served. A 429 proves
        Stripe recorded nothing, so throttled batches stay planned."""
        tenants = [await node.tenant(f"t{n}") for n in range(3)]
        for tenant in tenants:
            await node.serve(tenant, 25, at=window_start(node, 900))
        consumer = node.consumer()
        standin.set_switches(**{switch: True}, only=METER_EVENTS)
        for _ in range(2):
            with pytest.raises(TransientSyncError):
                await consumer.run()
            await asyncio.sleep(consumer.next_retry_in() or 0)
        assert node.states() == {"planned" if switch == "throttle" else "sent": 3}
        standin.set_switches(**{switch: False})
        await consumer.run_until_settled()
        assert node.states() == {"confirmed": 3}
        assert consumer.stats.set_aside == 0
        assert_billed_as_served(node, standin)

    async def test_a_429_storm_bills_exactly_once(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Stripe throttling in bursts (429s on and off from one round to the next, with
        slow answers so each customer's calls also queue behind each other) over many
        customers and windows: every batch ends confirmed, none set aside, and each
        customer is billed exactly what was served."""
        tenants = [await node.tenant(f"t{n}") for n in range(4)]
        for minutes in range(5):
            for n, tenant in enumerate(tenants):
                await node.serve(tenant, 3 + n, at=window_start(node, 900 - 60 * minutes))
        consumer = node.consumer(max_batches_per_round=6)
        standin.set_switches(latency=0.01)
        throttled_rounds = 0
        for burst in range(6):
            standin.set_switches(throttle=burst % 2 == 0)
            await consumer.run_round()
            throttled_rounds += burst % 2 == 0
            await asyncio.sleep(consumer.next_retry_in() or 0)
        standin.set_switches(throttle=False, latency=0)
        await consumer.run_until_settled()
        assert consumer.stats.transient_failures >= throttled_rounds
        assert node.states() == {"confirmed": 20}
        assert consumer.stats.set_aside == 0
        assert_billed_as_served(node, standin)

    async def test_a_429_retry_after_is_waited_out(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A throttled customer is not tried again before Stripe's Retry-After (1 s here)
        has passed, even though its own backoff would allow it sooner."""
        _, consumer = await one_failed_run(node, standin, "throttle", units=3)
        retry_in = consumer.next_retry_in()
        assert retry_in is not None
        assert retry_in > 0.8
        report = await consumer.run_round()
        assert report.calls == 0
        await consumer.run_until_settled()
        assert_billed_as_served(node, standin)

    async def test_a_day_of_refused_connections_does_not_set_a_batch_aside(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Connections refused for 30 hours prove Stripe recorded nothing: the batch stays
        planned (no unknown outcome, no first_sent_at), is not set aside past the horizon,
        and is billed exactly once when Stripe is reachable again."""
        tenant = await node.tenant("t")
        await node.serve(tenant, 12, at=window_start(node, 900))
        reachable = node.gateway
        node.gateway = StripeGateway(
            lambda: DEFAULT_API_KEY, api_base=f"http://127.0.0.1:{closed_port()}"
        )
        try:
            down = node.consumer()
            for _ in range(6):
                with pytest.raises(TransientSyncError):
                    await down.run()
                assert node.ledger("SELECT state, first_sent_at FROM billing_ledger") == [
                    ("planned", None)
                ]
                node.clock.advance(5 * 3600)
                await asyncio.sleep(down.next_retry_in() or 0)
        finally:
            await node.gateway.close()
            node.gateway = reachable
        assert down.stats.set_aside == 0
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert consumer.stats.set_aside == 0
        assert node.states() == {"confirmed": 1}
        assert standin.calls[METER_EVENTS] == 1
        assert_billed_as_served(node, standin)

    async def test_one_500_does_not_block_the_batch(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Stripe saves a 500 for its Idempotency-Key and replays it; the next attempt has a
        key of its own, so once Stripe is healthy the next round bills the batch once."""
        tenant = await node.tenant("t")
        await node.serve(tenant, 7, at=window_start(node, 900))
        consumer = node.consumer()
        standin.set_switches(fail=True, only="POST /v1/billing/meter_events")
        with pytest.raises(TransientSyncError):
            await consumer.run()
        standin.set_switches(fail=False)
        await asyncio.sleep(consumer.next_retry_in() or 0)
        await consumer.run()
        assert node.ledger("SELECT state, attempts FROM billing_ledger") == [("confirmed", 2)]
        assert standin.calls[METER_EVENTS] == 2
        assert_billed_as_served(node, standin)


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Crash(Exception):
    """The process dying at a chosen point."""


class TestCrashes:
    async def test_a_crash_between_stripes_answer_and_the_ledger_update_bills_once(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """The flush dies after Stripe accepted a batch and before the ledger says so; a new
        consumer sends the same identifier with the same value, and Stripe counts it once."""
        tenants = [await node.tenant(f"t{n}") for n in range(2)]
        for tenant in tenants:
            await node.serve(tenant, 10, at=window_start(node, 900))

        rounds: list[asyncio.Task[object]] = []

        async def die(batch: LedgerBatch) -> None:
            rounds[0].cancel()  # as abrupt as it gets inside one process: nothing after runs
            await asyncio.sleep(0)

        crashed = node.consumer(on_answer=die)
        round_ = asyncio.create_task(crashed.run_round())
        rounds.append(round_)
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert sum(standin.billed(node.customer(t)) for t in tenants) > 0
        assert node.states()["sent"] >= 1
        assert await node.cursor() == 0
        await node.consumer().run_until_settled()
        assert_billed_as_served(node, standin)
        attempts = node.ledger("SELECT attempts FROM billing_ledger WHERE state = 'confirmed'")
        assert max(a for (a,) in attempts) == 2

    async def test_a_crash_after_planning_replays_the_same_batches(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Batches planned before a crash are sent by the next consumer as they were planned
        (same identifiers, same values), never re-aggregated with later usage."""
        tenant = await node.tenant("t")
        at = window_start(node, 900)
        await node.serve(tenant, 10, at=at)
        await node.serve(tenant, 1, at=at + 120)
        standin.set_switches(fail=True)
        with pytest.raises(TransientSyncError):
            await node.consumer().run()
        planned = node.ledger(
            "SELECT identifier, value FROM billing_ledger ORDER BY first_seq, window_start"
        )
        await node.serve(tenant, 5, at=at + 1)  # same window, arriving after the plan
        standin.set_switches(fail=False)
        await node.consumer().run_until_settled()
        rows = node.ledger(
            "SELECT identifier, value FROM billing_ledger ORDER BY first_seq, window_start"
        )
        assert rows[: len(planned)] == planned
        assert [value for _, value in rows] == [10, 1, 5]
        assert_billed_as_served(node, standin)

    async def test_a_failed_ledger_write_after_the_answer_is_resent_not_lost(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """An error writing Stripe's answer leaves the batch sent (never marked done before
        the write, OpenMeter #5118); the next round resends it and Stripe dedups it."""
        tenant = await node.tenant("t")
        await node.serve(tenant, 9, at=window_start(node, 900))
        failing = True

        async def ledger_fails(batch: LedgerBatch) -> None:
            if failing:
                raise Crash("disk I/O error")

        consumer = node.consumer(on_answer=ledger_fails)
        with pytest.raises(ExceptionGroup):
            await consumer.run_round()
        assert node.states() == {"sent": 1}
        failing = False
        await consumer.run_until_settled()
        assert node.states() == {"confirmed": 1}
        assert_billed_as_served(node, standin)


class TestNeverTwice:
    async def test_an_unknown_outcome_past_the_horizon_is_settled_by_stripes_summary(
        self, node: BillingNode, standin: StripeStandin, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A batch Stripe recorded but whose answer was lost, found again 24 hours later when
        Stripe no longer dedups its identifier, is not resent: Stripe's meter event summary
        for its minute holds it, so it is confirmed and logged; the customer is billed once."""
        tenant, consumer = await one_failed_run(node, standin, "lose_answers")
        node.clock.advance(DAY + 60)
        standin.clock.advance(DAY + 60)
        with caplog.at_level(logging.WARNING, logger="sync.billing.send"):
            await consumer.run_until_settled()
        assert standin.calls[METER_EVENTS] == 1
        assert standin.billed(node.customer(tenant)) == 12
        assert consumer.stats.resolved_landed == 1
        assert consumer.stats.set_aside == 0
        assert node.states() == {"confirmed": 1}
        assert "landed, confirmed" in caplog.text
        assert await node.cursor() == node.queue.last_seq

    async def test_an_unknown_outcome_stripe_cannot_decide_is_set_aside_with_the_figures(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Another sender's usage for the same customer in the batch's minute makes Stripe's
        summary match neither "landed" nor "never landed": past the identifier window the
        batch is set aside with both figures, never resent on a guess."""
        tenant, consumer = await one_failed_run(node, standin, "drop")
        [(state, stamp)] = node.ledger("SELECT state, stamp FROM billing_ledger")
        assert state == "sent"
        await node.gateway.send_meter_event(
            event_name=EVENT_NAME,
            customer_id=node.customer(tenant),
            value=5,
            timestamp=stamp,
            identifier="another-node-1",
            attempt=1,
        )
        node.clock.advance(DAY + 60)
        standin.clock.advance(DAY + 60)
        await consumer.run_until_settled()
        [(state, reason)] = node.ledger("SELECT state, set_aside_reason FROM billing_ledger")
        assert state == "set_aside"
        assert "holds 5 units" in reason
        assert "neither the 0 units" in reason
        assert consumer.stats.set_aside_unknown_outcome == 1
        assert standin.calls[METER_EVENTS] == 2  # the node's one attempt, the other sender's

    async def test_within_the_horizon_an_unknown_outcome_is_resent_and_deduplicated(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """22 hours after a lost answer the batch is still resent, and Stripe, which still
        knows the identifier, bills it once."""
        _, consumer = await one_failed_run(node, standin, "lose_answers")
        node.clock.advance(22 * 3600)
        standin.clock.advance(22 * 3600)
        await consumer.run_until_settled()
        assert node.states() == {"confirmed": 1}
        assert standin.calls[METER_EVENTS] == 2
        assert_billed_as_served(node, standin)

    @pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
    async def test_a_clock_stepped_back_does_not_stretch_the_horizon(
        self, node: BillingNode, standin: StripeStandin, restart: bool
    ) -> None:
        """A day after a lost answer, with the node's wall clock stepped back 3 hours in
        between (while running, or while stopped for a restart), the batch is settled from
        Stripe's summary: its age is counted on a clock that never runs back, so it is not
        resent after Stripe has forgotten its identifier (which would bill it twice)."""
        tenant, consumer = await one_failed_run(node, standin, "lose_answers")
        node.clock.advance(-3 * 3600)
        if restart:
            consumer = node.consumer()
            await consumer.run_round()  # the restarted consumer starts its clock here
        node.clock.advance(DAY + 60)
        node.monotonic.advance(DAY + 60)
        standin.clock.advance(DAY + 60)
        await consumer.run_until_settled()
        assert standin.calls[METER_EVENTS] == 1
        assert standin.billed(node.customer(tenant)) == 12
        assert consumer.stats.resolved_landed == 1

    async def test_a_window_past_35_days_is_set_aside_and_reported(
        self, node: BillingNode, standin: StripeStandin, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Usage older than Stripe accepts is never sent and never silently dropped: its
        batch is set aside with the reason, counted and logged; newer usage is billed."""
        old, recent = await node.tenant("old"), await node.tenant("recent")
        await node.serve(old, 8, at=node.clock() - 36 * DAY)
        await node.serve(recent, 3, at=window_start(node, 600))
        consumer = node.consumer()
        with caplog.at_level(logging.ERROR, logger="sync.billing.send"):
            await consumer.run_until_settled()
        assert consumer.stats.set_aside_too_old == 1
        assert standin.calls[METER_EVENTS] == 1
        assert standin.billed(node.customer(recent)) == 3
        assert standin.billed(node.customer(old)) == 0
        [(reason,)] = node.ledger(
            "SELECT set_aside_reason FROM billing_ledger WHERE state = 'set_aside'"
        )
        assert "35-day" in reason
        assert "35-day" in caplog.text

    async def test_a_batch_waiting_for_its_customer_past_35_days_is_set_aside(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A tenant that is never provisioned does not hold its usage (and the cursor) for
        ever: once the window is past Stripe's limit the batch is set aside and reported."""
        tenant = await node.tenant("never", provisioned=False)
        await node.serve(tenant, 2, at=window_start(node, 600))
        consumer = node.consumer()
        await consumer.run_until_settled()
        assert node.states() == {"planned": 1}
        node.clock.advance(36 * DAY)
        await consumer.run_until_settled()
        assert node.states() == {"set_aside": 1}
        assert await node.cursor() == node.queue.last_seq

    async def test_a_refused_batch_is_set_aside_with_stripes_reason(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A 400 from Stripe (here: usage stamped more than 5 minutes ahead of Stripe's clock,
        from a node whose clock runs an hour fast) sets the batch aside with the error;
        retrying it would fail the same way for ever. (A customer Stripe does not know is no
        such case: Stripe accepts that event and reports it later, asynchronously.)"""
        tenant = await node.tenant("t")
        standin.clock.advance(-3600)
        await node.serve(tenant, 2, at=window_start(node, 600))
        consumer = node.consumer()
        await consumer.run_until_settled()
        [(state, reason)] = node.ledger("SELECT state, set_aside_reason FROM billing_ledger")
        assert state == "set_aside"
        assert reason.startswith("refused by Stripe")
        assert consumer.stats.set_aside_refused == 1


class TestRenumbering:
    @pytest.mark.parametrize("appended_first", [0, 5, 8], ids=["empty", "same-range", "longer"])
    async def test_a_queue_renumbered_behind_the_ledger_bills_its_new_usage(
        self, node: BillingNode, standin: StripeStandin, appended_first: int
    ) -> None:
        """The queue directory is lost and starts numbering again from 1; new usage of the
        same tenant in the same window, even in exactly the range already planned (records
        1-5), is billed in full, and the batches planned before are not sent again: the
        new numbering's identifiers differ from the old ones."""
        tenant = await node.tenant("t")
        at = window_start(node, 900)
        await node.serve(tenant, 5, at=at)
        await node.consumer().run_until_settled()
        assert standin.billed(node.customer(tenant)) == 5
        directory = node.queue.directory
        await node.queue.close()
        shutil.rmtree(directory)
        node.queue = await open_queue(directory, consumers=(BILLING_CONSUMER,))
        if appended_first:  # served before the flush looked again
            await node.serve(tenant, appended_first, at=at)
        consumer = node.consumer()
        await consumer.run_until_settled()
        await node.serve(tenant, 3, at=at + 1)
        await consumer.run_until_settled()
        assert_billed_as_served(node, standin)
        assert node.states() == {"confirmed": 3 if appended_first else 2}
        assert await node.cursor() == node.queue.last_seq

    async def test_a_consumer_restarted_on_an_intact_queue_plans_nothing_again(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Without a renumbering, a consumer started afresh (its planned records still in the
        queue, not yet committed) keeps the ledger's numbering: nothing is planned twice."""
        tenant = await node.tenant("t")
        await node.serve(tenant, 5, at=window_start(node, 900))
        standin.set_switches(throttle=True)
        await node.consumer().run_round()
        standin.set_switches(throttle=False)
        await node.serve(tenant, 4, at=window_start(node, 800))
        await node.consumer().run_until_settled()
        assert_billed_as_served(node, standin)
        assert node.ledger("SELECT DISTINCT queue_epoch FROM billing_ledger") == [(0,)]


class TestDamagedQueue:
    async def test_a_damaged_record_stops_planning_but_not_sending(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A record the queue cannot read stops planning at it (an operator must look, as
        docs/queue.md says) and the round reports it, but batches planned before it are
        still sent and billed."""
        tenant = await node.tenant("t")
        await node.serve(tenant, 6, at=window_start(node, 900))
        standin.set_switches(fail=True)
        with pytest.raises(TransientSyncError):
            await node.consumer().run()
        standin.set_switches(fail=False)
        [segment] = sorted((node.queue.directory).glob("*.seg"))
        offset = segment.stat().st_size
        await node.serve(tenant, 3, at=window_start(node, 600))
        with segment.open("r+b") as file:
            file.seek(offset + 40)  # inside the first new record's payload
            byte = file.read(1)
            file.seek(offset + 40)
            file.write(bytes([byte[0] ^ 0xFF]))
        consumer = node.consumer()
        with pytest.raises(CorruptRecord):
            await consumer.run_round()
        assert node.states() == {"confirmed": 1}
        assert standin.billed(node.customer(tenant)) == 6
