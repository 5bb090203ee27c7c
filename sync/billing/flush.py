"""The usage flush: the `billing` consumer of the usage queue turns it into Stripe meter events.

Each round (docs/billing.md, "Usage flush"):

1. plan: read the records after the last range planned, cut them into ranges of whole
   windows (sync/billing/plan.py) and write each range's batches to the ledger, with the
   range marked planned, in one transaction (sync/billing/ledger.py);
2. give batches of tenants provisioned since then their Stripe customer; batches of tenants
   still without one wait, planned, until provisioning gives them one;
3. set aside what may no longer be sent, then send the rest (sync/billing/send.py);
4. read again the periods of customers whose known period has ended unread
   (edge_node/tenants/billing_periods.py: the tenants' usage API sees their invoices turn final);
5. commit the queue cursor up to just before the oldest range that still has a batch
   planned or sent, so the queue keeps every record until its batch is settled.

The consumer runs inside the daemon, which owns the queue's lock, as one of the sync
worker's periodic jobs (sync/jobs.py): `run()` does rounds while there is work that can be
done now, and raises TransientSyncError when Stripe failed every call it was given, so the
job's status shows the outage and its loop backs off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge_node.config import BillingConfig, Config
from edge_node.errors import TransientSyncError
from edge_node.queue import ConsumerQueue, QueueCorruption, Record
from edge_node.usage.meter import BILLING_CONSUMER
from sync.backoff import Backoff
from sync.billing.clock import HorizonClock
from sync.billing.ledger import BillingLedger
from sync.billing.ledger_batch import LedgerBatch
from sync.billing.ledger_thread import AsyncLedger
from sync.billing.periods import StampSlot
from sync.billing.plan import UsagePlanner, record_fingerprint
from sync.billing.send import BatchSender, MeterEventGateway
from sync.billing.send_rules import HOUR, SendRules
from sync.billing.stats import BillingStats

log = logging.getLogger(__name__)

READ_CHUNK_RECORDS = 100_000
JOB_NAME = "stripe-usage-flush"


@dataclass(frozen=True)
class RoundReport:
    """What one round did, and whether more can be done at once."""

    planned_batches: int
    calls: int
    set_aside: int
    committed_through: int
    more: bool


class BillingConsumer:
    """Flushes one queue's usage to Stripe; one per queue: the queue this process owns, or
    one it follows (a worker's, from the supervisor of `serve --workers N`)."""

    def __init__(
        self,
        queue: ConsumerQueue,
        ledger: BillingLedger,
        gateway: MeterEventGateway,
        config: BillingConfig,
        *,
        node_id: str,
        event_name: str,
        invoice_grace_seconds: float = 3600.0,
        queue_name: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        on_answer: Callable[[LedgerBatch], Awaitable[None]] | None = None,
        close_gateway: Callable[[], Awaitable[None]] | None = None,
        read_chunk: int = READ_CHUNK_RECORDS,
    ) -> None:
        self.queue = queue
        self.queue_name = queue_name or queue.directory.name
        self.config = config
        self.node_id = node_id
        self.event_name = event_name
        self.stats = BillingStats()
        self._ledger = AsyncLedger(ledger)
        self._clock = clock
        self._monotonic = monotonic
        self._horizon: HorizonClock | None = None
        self._close_gateway = close_gateway
        self._read_chunk = read_chunk
        self._sender = BatchSender(
            gateway,
            self._ledger,
            self.stats,
            rules=SendRules(
                unknown_outcome_horizon_seconds=config.unknown_outcome_horizon_hours * HOUR
            ),
            concurrency=config.concurrency,
            invoice_grace_seconds=invoice_grace_seconds,
            stamp_slot=StampSlot(config.stamp_slot, config.stamp_slots),
            clock=clock,
            backoff=backoff or Backoff(),
            on_answer=on_answer,
        )
        self._planner: UsagePlanner | None = None
        self._cursor = 0

    # As a sync worker job (sync/jobs.py).

    @property
    def name(self) -> str:
        return JOB_NAME

    @property
    def interval(self) -> float:
        return self.config.poll_interval_seconds

    async def run(self) -> None:
        """Rounds until nothing more can be done now; TransientSyncError if every call failed."""
        while True:
            failures = self.stats.transient_failures
            report = await self.run_round()
            if report.calls and self.stats.transient_failures - failures == report.calls:
                raise TransientSyncError(
                    f"Stripe failed all {report.calls} meter event calls of this round; "
                    f"{len(self._sender.waiting_customers())} customers are backing off",
                    retry_after=self.next_retry_in(),
                )
            if not report.more:
                return

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest customer backing off after a failure may be tried."""
        return self._sender.next_retry_in()

    async def close(self) -> None:
        """Close the ledger's connection (after any call in flight) and the gateway."""
        await self._ledger.close()
        if self._close_gateway is not None:
            await self._close_gateway()

    # Rounds.

    async def run_round(self) -> RoundReport:
        """Plan, attach customers, set aside, send, commit: one pass."""
        planning_failed: QueueCorruption | None = None
        await self._ensure_horizon()
        try:
            planned, read_full = await self._plan()
        except BaseException as exc:
            # The planner may have let go of records whose plan was not written: start again
            # from what the ledger holds.
            self._planner = None
            if not isinstance(exc, QueueCorruption):
                raise
            # Damaged records wait for an operator (docs/queue.md); what is planned goes on.
            planning_failed, planned, read_full = exc, 0, False
        ledger = self._ledger.ledger
        await self._ledger.run(ledger.attach_customers)
        open_batches = await self._ledger.run(ledger.open_batches, self.queue_name)
        set_aside = await self._sender.set_aside_expired(open_batches)
        sendable = await self._ledger.run(
            ledger.sendable,
            self.queue_name,
            self.config.max_batches_per_round,
            skip_customers=self._sender.waiting_customers(),
        )
        calls, settled = self.stats.calls, self._settled()
        await self._sender.send(sendable)
        await self._sender.read_periods(await self._ledger.run(ledger.ended_unread, self._clock()))
        committed = await self._commit()
        await self._persist_clock()
        progressed = self._settled() > settled
        more = read_full or (len(sendable) == self.config.max_batches_per_round and progressed)
        if planning_failed is not None:
            raise planning_failed
        return RoundReport(planned, self.stats.calls - calls, set_aside, committed, more)

    async def run_until_settled(self, *, max_rounds: int = 10_000) -> None:
        """Rounds until every record is planned and every batch with a customer is settled
        (for tools and tests; the daemon runs `run()` periodically instead)."""
        for _ in range(max_rounds):
            report = await self.run_round()
            if not report.calls and (wait := self.next_retry_in()) is not None:
                await asyncio.sleep(wait)
            planner = await self._ensure_planner()
            open_batches = await self._ledger.run(self._ledger.ledger.open_batches, self.queue_name)
            if (
                planner.read_through >= self.queue.last_seq
                and not planner.pending
                and all(batch.customer_id is None for batch in open_batches)
            ):
                return
        raise RuntimeError(f"billing did not settle in {max_rounds} rounds")

    async def _plan(self) -> tuple[int, bool]:
        """Plan the next chunk of records; (batches written, whether the read was full)."""
        planner = await self._ensure_planner()
        records = await self.queue.read(
            BILLING_CONSUMER, self._read_chunk, after=planner.read_through
        )
        read_full = len(records) == self._read_chunk
        # Decoding and summing a chunk is CPU work: on the ledger's thread, off the loop
        # that answers requests, with each range written as soon as it is cut.
        written = await self._ledger.run(self._plan_records, planner, records, read_full)
        return written, read_full

    def _plan_records(self, planner: UsagePlanner, records: list[Record], read_full: bool) -> int:
        """(On the ledger's thread.) Take `records` and write every range now complete."""
        planner.extend(records)
        written = 0
        while (planned := planner.take(self._clock(), read_everything=not read_full)) is not None:
            written += self._ledger.ledger.record_plan(planned, int(self._clock() * 1e6))
            self.stats.planned_ranges += 1
            self.stats.planned_batches += len(planned.batches)
            self.stats.unreadable_records += len(planned.unreadable)
        return written

    async def _ensure_horizon(self) -> HorizonClock:
        if self._horizon is None:
            floor = await self._ledger.run(self._ledger.ledger.clock_floor)
            self._horizon = HorizonClock(self._clock, self._monotonic, floor=floor)
            self._sender.horizon_clock = self._horizon
        return self._horizon

    async def _persist_clock(self) -> None:
        horizon = await self._ensure_horizon()
        reading = horizon.due_for_persisting()
        if reading is not None:
            await self._ledger.run(self._ledger.ledger.save_clock_high_water, reading)
            horizon.persisted = reading

    async def _ensure_planner(self) -> UsagePlanner:
        await self._ensure_horizon()
        if self._planner is None:
            status = await self.queue.status()
            self._cursor = status.consumers[BILLING_CONSUMER].cursor
            planned, epoch = await self._numbering(status.last_seq)
            self._planner = UsagePlanner(
                node_id=self.node_id,
                queue=self.queue_name,
                event_name=self.event_name,
                window_seconds=self.config.window_seconds,
                planned_through=max(planned, self._cursor),
                queue_epoch=epoch,
            )
        return self._planner

    async def _numbering(self, last_seq: int) -> tuple[int, int]:
        """(last record planned, queue epoch), after starting a new epoch if the queue's
        numbering restarted behind the ledger (its directory lost or replaced, or planned
        records cut from its end): the record the ledger planned last is gone, or another
        record has its number. Records after what the queue held when it was opened are
        then planned afresh, with identifiers of the new epoch."""
        positions = self._ledger.ledger.positions
        planned = await self._ledger.run(positions.planned_through, self.queue_name)
        epoch = await self._ledger.run(positions.queue_epoch, self.queue_name)
        if planned <= self._cursor:
            return planned, epoch
        if planned <= last_seq:
            expected = await self._ledger.run(positions.planned_fingerprint, self.queue_name)
            if expected is None:
                return planned, epoch
            records = await self.queue.read(BILLING_CONSUMER, 1, after=planned - 1)
            if (
                records
                and records[0].seq == planned
                and f"{record_fingerprint(records[0]):08x}" == expected
            ):
                return planned, epoch
        restart = min(self.queue.opened_last_seq, planned)
        epoch = await self._ledger.run(positions.renumber, self.queue_name, restart)
        log.error(
            "billing: queue %s no longer holds the record %d the ledger planned last (its"
            " numbering restarted); planning records after %d afresh as numbering %d",
            self.queue_name,
            planned,
            restart,
            epoch,
        )
        return restart, epoch

    async def _commit(self) -> int:
        """Move the cursor past every range whose batches are all settled."""
        point = await self._ledger.run(self._ledger.ledger.positions.commit_point, self.queue_name)
        point = min(point, self.queue.last_seq)
        if point > self._cursor:
            await self.queue.commit(BILLING_CONSUMER, point)
            self._cursor = point
        return self._cursor

    def _settled(self) -> int:
        return self.stats.confirmed + self.stats.set_aside


def open_billing(
    config: Config,
    gateway: MeterEventGateway,
    queue: ConsumerQueue,
    *,
    close_gateway: Callable[[], Awaitable[None]] | None = None,
) -> BillingConsumer:
    """The usage flush of the daemon's queue, with a ledger connection of its own."""
    ledger = BillingLedger.open(config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms)
    return BillingConsumer(
        queue,
        ledger,
        gateway,
        config.billing,
        node_id=config.node_id,
        event_name=config.stripe.meter_event_name,
        invoice_grace_seconds=config.stripe.invoice_grace_hours * 3600,
        close_gateway=close_gateway,
    )
