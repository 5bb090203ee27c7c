"""Sending planned batches to Stripe: one call at a time per customer, never a second charge.

Stripe takes one concurrent meter-event call per customer and meter, so each customer's
batches go one after another while up to `concurrency` customers are served at once. A
transient failure (unreachable, timeout, 429, 5xx) stops that customer for the round and
backs it off with jitter, at least as long as Stripe's Retry-After says; the others go on.
A refusal (400) sets the batch aside with Stripe's reason.

Every attempt is noted in the ledger before the call (state `sent`, first_sent_at), and the
answer after it, so a crash anywhere in between resends the same identifier with the same
value, which Stripe records once. A failure that proves Stripe recorded nothing (refused
connection, 429, 401, 403) undoes the note if this attempt made it (the batch is `planned`
again), so only attempts that may have reached Stripe count towards the horizon. Each
attempt carries its attempt number in its Idempotency-Key, so a 500 Stripe saved for one
attempt is not replayed to the next. That holds only while Stripe still remembers the
identifier (at least 24 hours), accepts the timestamp (35 days) and still invoices the
stamp's period (sync/billing/periods.py): past either of the first two `SendRules`
(sync/billing/send_rules.py) sets a batch aside; an unknown outcome past the identifier
window or its period's finalization is settled from Stripe's meter event summaries for the
minute of its stamp (`_resolve`): confirmed, sent afresh under a new identifier, or set aside
when the summary cannot decide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_node.errors import PermanentSyncError, TransientSyncError
from sync.backoff import Backoff
from sync.billing.ledger_batch import LedgerBatch
from sync.billing.ledger_thread import AsyncLedger
from sync.billing.periods import (
    PeriodBook,
    Placement,
    Stamp,
    StampSlot,
    place,
    slotted,
    still_invoiced,
)
from sync.billing.send_rules import SendRules, when
from sync.billing.stats import BillingStats
from sync.stripe.gateway import MeterEventOutcome
from sync.stripe.periods import SubscriptionPeriods

log = logging.getLogger(__name__)


CALL_TIMEOUT_SECONDS = 120.0
# Stripe's meter event summaries are aggregated asynchronously: an unknown outcome is settled
# from them only once its first send is this old.
SUMMARY_SETTLE_SECONDS = 300.0
MINUTE = 60


class MeterEventGateway(Protocol):
    """What sending needs of Stripe (sync/stripe/gateway.py's StripeGateway)."""

    async def send_meter_event(
        self,
        *,
        event_name: str,
        customer_id: str,
        value: int,
        timestamp: int,
        identifier: str,
        attempt: int,
    ) -> MeterEventOutcome: ...

    async def subscription_periods(self, customer_id: str) -> SubscriptionPeriods | None: ...

    async def meter_event_total(
        self, *, event_name: str, customer_id: str, start: int, end: int
    ) -> float: ...


@dataclass
class _Retry:
    failures: int = 0
    not_before: float = 0.0  # loop time


@dataclass
class BatchSender:
    """Sends one round of batches, serialized per customer, bounded across customers."""

    gateway: MeterEventGateway
    ledger: AsyncLedger
    stats: BillingStats
    rules: SendRules = field(default_factory=SendRules)
    concurrency: int = 8
    clock: Callable[[], float] = time.time
    # The clock of first_sent_at and the unknown-outcome age: one that never runs back.
    horizon_clock: Callable[[], float] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    periods: PeriodBook = field(init=False)
    invoice_grace_seconds: float = 3600.0  # stripe.invoice_grace_hours
    stamp_slot: StampSlot = field(default_factory=StampSlot)  # billing.stamp_slot(s)
    call_timeout: float = CALL_TIMEOUT_SECONDS
    # Called after Stripe answered and before the answer is written: tests crash here.
    on_answer: Callable[[LedgerBatch], Awaitable[None]] | None = None
    _retries: dict[str, _Retry] = field(default_factory=dict)
    _unsubscribed: set[str] = field(default_factory=set)  # warned about, once each

    def __post_init__(self) -> None:
        ledger = self.ledger.ledger
        self.periods = PeriodBook(
            self.gateway,
            on_read=self.ledger.record_periods,
            changed_at=lambda c: self.ledger.run(ledger.periods.changed_at, c),
            grace=self.invoice_grace_seconds,
        )

    def waiting_customers(self) -> list[str]:
        """Customers backing off now: their batches are not due this round."""
        now = asyncio.get_running_loop().time()
        return [customer for customer, r in self._retries.items() if r.not_before > now]

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest customer backing off may be tried again."""
        now = asyncio.get_running_loop().time()
        waits = [r.not_before - now for r in self._retries.values() if r.not_before > now]
        return min(waits, default=None)

    async def set_aside_expired(self, batches: Sequence[LedgerBatch]) -> int:
        """Set aside every open batch that may no longer be sent; how many."""
        now, horizon_now = self.clock(), self._horizon_now()
        doomed: list[tuple[LedgerBatch, str, str]] = []
        for batch in batches:
            verdict, reason, counter = self.rules.verdict(batch, now, horizon_now)
            if verdict == "set_aside":
                doomed.append((batch, reason, counter))
        if doomed:
            await self.ledger.set_aside([(batch.identifier, reason) for batch, reason, _ in doomed])
            for batch, reason, counter in doomed:
                self._reported(batch, reason, counter)
        return len(doomed)

    async def read_periods(self, customers: Sequence[str]) -> None:
        """Read the customers' periods again (kept by the ledger as they are read); a failure
        leaves them for the next round."""
        now = self.clock()
        for customer in customers:
            try:
                await self.periods.periods(customer, now)
            except TransientSyncError:
                return

    async def send(self, batches: Sequence[LedgerBatch]) -> None:
        """Send `batches` (open, with a customer), each customer's in the order given."""
        by_customer: dict[str, list[LedgerBatch]] = {}
        for batch in batches:
            assert batch.customer_id is not None
            by_customer.setdefault(batch.customer_id, []).append(batch)
        slots = asyncio.Semaphore(self.concurrency)
        async with asyncio.TaskGroup() as group:
            for customer, its in by_customer.items():
                group.create_task(self._send_customer(customer, its, slots))

    async def _send_customer(
        self, customer: str, batches: list[LedgerBatch], slots: asyncio.Semaphore
    ) -> None:
        async with slots:
            for batch in batches:
                if not await self._send_one(batch):
                    return
            self._retries.pop(customer, None)

    async def _send_one(self, batch: LedgerBatch) -> bool:
        """Send one batch and record the answer; False after a transient failure."""
        assert batch.customer_id is not None
        now = self.clock()
        verdict, reason, counter = self.rules.verdict(batch, now, self._horizon_now())
        if verdict == "hold":
            return True
        if verdict == "set_aside":
            await self.ledger.set_aside([(batch.identifier, reason)])
            self._reported(batch, reason, counter)
            return True
        stamp = await self._stamp(batch, now, resolve=reason if verdict == "resolve" else None)
        if isinstance(stamp, bool):
            return stamp
        return await self._call(batch, stamp)

    async def _stamp(self, batch: LedgerBatch, now: float, *, resolve: str | None) -> Stamp | bool:
        """The timestamp to send the batch with (sync/billing/periods.py); or, when it is not
        to be sent now, whether its customer may go on (False after a transient failure)."""
        assert batch.customer_id is not None
        try:
            periods = await self.periods.periods(batch.customer_id, now)
        except TransientSyncError as exc:
            self.stats.calls += 1  # a call for this batch, and it failed
            self._back_off(batch, exc)
            return False
        if periods is None:
            if batch.customer_id not in self._unsubscribed:
                self._unsubscribed.add(batch.customer_id)
                log.warning(
                    "billing: customer %s (tenant %s) has no live subscription: its usage"
                    " waits until it has one",
                    batch.customer_id,
                    batch.tenant_id,
                )
            return False
        self._unsubscribed.discard(batch.customer_id)
        if batch.state == "sent" and batch.stamp is not None:
            if resolve is not None or not still_invoiced(batch.stamp, periods, now):
                return await self._resolve(batch, resolve or "its period's invoice is finalized")
            return Stamp(batch.stamp, batch.placement or "own")
        return slotted(place(batch.window_start, periods, now), periods, self.stamp_slot)

    async def _call(self, batch: LedgerBatch, stamp: Stamp) -> bool:
        """One attempt at Stripe, noted before and its answer recorded after."""
        assert batch.customer_id is not None
        attempt, made_unknown = await self.ledger.mark_sent(
            batch.identifier, _us(self._horizon_now()), stamp
        )
        if attempt == 0:
            return True  # no longer open
        self.stats.calls += 1
        try:
            async with asyncio.timeout(self.call_timeout):
                outcome = await self.gateway.send_meter_event(
                    event_name=batch.event_name,
                    customer_id=batch.customer_id,
                    value=batch.value,
                    timestamp=stamp.timestamp,
                    identifier=batch.sent_identifier,
                    attempt=attempt,
                )
        except (TransientSyncError, TimeoutError) as exc:
            if made_unknown and isinstance(exc, TransientSyncError) and exc.not_received:
                # Stripe cannot have recorded it: as if this attempt had not been made.
                await self.ledger.unmark_sent(batch.identifier, attempt)
            self._back_off(batch, exc)
            return False
        except PermanentSyncError as exc:
            if self.on_answer is not None:
                await self.on_answer(batch)
            await self.ledger.set_aside([(batch.identifier, f"refused by Stripe: {exc}")])
            self._reported(batch, f"refused by Stripe: {exc}", "set_aside_refused")
            return True
        if self.on_answer is not None:
            await self.on_answer(batch)
        await self.ledger.confirm(batch.identifier, _us(self.clock()))
        self._confirmed(stamp.placement)
        if outcome is MeterEventOutcome.DUPLICATE:
            self.stats.duplicates += 1
        return True

    async def _resolve(self, batch: LedgerBatch, why: str) -> bool:
        """Settle a batch sent with an unknown outcome that must not simply be resent, from
        what Stripe's meter holds in the minute of its stamp against what this node's ledger
        says it sent there: everything unknown there landed (confirmed), none of it did (sent
        afresh under new identifiers), or neither adds up (set aside, with the figures)."""
        assert batch.customer_id is not None
        assert batch.stamp is not None
        if batch.first_sent_at is not None:
            settling = batch.first_sent_at / 1e6 + SUMMARY_SETTLE_SECONDS - self._horizon_now()
            if settling > 0:
                return True  # Stripe's summaries may not count it yet
        start = batch.stamp // MINUTE * MINUTE
        try:
            held = await self.gateway.meter_event_total(
                event_name=batch.event_name,
                customer_id=batch.customer_id,
                start=start,
                end=start + MINUTE,
            )
        except (TransientSyncError, TimeoutError) as exc:
            self.stats.calls += 1
            self._back_off(batch, exc)
            return False
        confirmed, unknown = await self.ledger.run(
            self.ledger.ledger.stamped_in,
            batch.customer_id,
            batch.event_name,
            start,
            start + MINUTE,
        )
        if not unknown:
            return True  # settled meanwhile, with another batch of the same minute
        unknown_units = sum(b.value for b in unknown)
        identifiers = [b.identifier for b in unknown]
        if abs(held - (confirmed + unknown_units)) < 1e-6:
            for landed in unknown:
                await self.ledger.confirm(landed.identifier, _us(self.clock()))
                self._confirmed(landed.placement or "own")
            self.stats.resolved_landed += len(unknown)
            log.warning(
                "billing: %s; Stripe's summary for customer %s at %s holds all %d units this"
                " node sent there: batches %s landed, confirmed",
                why,
                batch.customer_id,
                when(start),
                confirmed + unknown_units,
                ", ".join(identifiers),
            )
        elif abs(held - confirmed) < 1e-6:
            await self.ledger.send_afresh(identifiers)
            self.stats.resolved_resent += len(unknown)
            log.warning(
                "billing: %s; Stripe's summary for customer %s at %s holds only the %d units"
                " confirmed there: batches %s never landed and are sent again under fresh"
                " identifiers",
                why,
                batch.customer_id,
                when(start),
                confirmed,
                ", ".join(identifiers),
            )
        else:
            reason = (
                f"{why}; Stripe's meter holds {held:g} units for the customer at"
                f" {when(start)}, which is neither the {confirmed} units this node had"
                f" confirmed there nor those plus the {unknown_units} units sent with an"
                " unknown outcome (another node billing this customer in that minute?)"
            )
            await self.ledger.set_aside([(identifier, reason) for identifier in identifiers])
            for undecided in unknown:
                self._reported(undecided, reason, "set_aside_unknown_outcome")
        return True

    def _confirmed(self, placement: Placement) -> None:
        self.stats.confirmed += 1
        if placement == "carried_forward":
            self.stats.carried_forward += 1
        elif placement == "before_subscription":
            self.stats.before_subscription += 1

    def _horizon_now(self) -> float:
        return (self.horizon_clock or self.clock)()

    def _back_off(self, batch: LedgerBatch, exc: BaseException) -> None:
        assert batch.customer_id is not None
        self.stats.transient_failures += 1
        retry = self._retries.setdefault(batch.customer_id, _Retry())
        retry.failures += 1
        delay = self.backoff.delay(retry.failures)
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            delay = max(delay, float(hint))
        retry.not_before = asyncio.get_running_loop().time() + delay
        log.warning(
            "billing: meter event %s for customer %s failed (%d in a row), retrying in %.1f s: %s",
            batch.identifier,
            batch.customer_id,
            retry.failures,
            delay,
            exc or type(exc).__name__,
        )

    def _reported(self, batch: LedgerBatch, reason: str, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        log.error(
            "billing: batch %s set aside (tenant %s, customer %s, window %s, %d units from %d"
            " events, queue %s records %d-%d): %s; see `edge-node billing reconcile`",
            batch.identifier,
            batch.tenant_id,
            batch.customer_id,
            when(batch.window_start),
            batch.value,
            batch.events,
            batch.queue,
            batch.first_seq,
            batch.last_seq,
            reason,
        )


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)
