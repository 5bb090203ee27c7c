"""Where a batch's usage is stamped: always inside a period of the tenant's subscription that
Stripe will still invoice.

Stripe puts a meter event into the subscription period that contains its `timestamp` and
invoices a period's usage when it finalizes the period's invoice, `automatically_finalizes_at`
(the period end plus the account's grace); usage for a finalized period, and usage before the
subscription's start, is accepted and never invoiced (sync/stripe/periods.py). So the
timestamp sent is chosen here, from the customer's periods as Stripe reports them, and kept
in the ledger beside the batch's own window:

    window in the current period (or later)          -> the window's start      ("own")
    window in an ended period whose invoice is still
      a draft finalizing more than a margin from now -> the window's start      ("own")
    window before the subscription's start           -> the subscription's start
                                                        ("before_subscription"), then as above
    otherwise (its period's invoice is finalized, or
      finalizes within the margin)                   -> the current period's start
                                                        ("carried_forward")

A stamp is never older than the window it stands for (the current period started after an
earlier one's usage), so a window Stripe still accepts (35 days) gives a stamp it accepts. The
periods are
read per customer and kept until the current period ends, a draft's deadline comes within
the margin, a webhook reports a change (`customer.subscription.updated`, `invoice.created`,
`invoice.finalized`, recorded in node.sqlite by edge_node/tenants/billing_periods.py: a
renewal, a new draft, an invoice finalized early), or `PERIODS_TTL_SECONDS` pass (a
canceled or replaced subscription).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from edge_node.clock import now_us
from edge_node.errors import ConfigError
from sync.stripe.periods import SubscriptionPeriods

Placement = Literal["own", "before_subscription", "carried_forward"]
PLACEMENTS: tuple[Placement, ...] = ("own", "before_subscription", "carried_forward")
# Usage is stamped into an ended period only while its invoice finalizes further ahead than
# this: room for the call, a retry and clock error between the node and Stripe.
FINALIZATION_MARGIN_SECONDS = 900.0
# A batch already sent is resent with its stamp into an ended period only while its invoice
# finalizes further ahead than this; after that Stripe's summaries settle it.
RESEND_MARGIN_SECONDS = 120.0
PERIODS_TTL_SECONDS = 600.0
MINUTE = 60  # Stripe's meter event summaries are aligned to minutes
# Within the account's invoice grace after a renewal, periods read while the ended period's
# draft is not listed yet (Stripe creates it at the renewal, not always by the time of the
# read) are read again this soon, so that usage still reaches that draft instead of being
# carried forward for PERIODS_TTL_SECONDS.
DRAFT_RECHECK_SECONDS = 60.0


class PeriodsGateway(Protocol):
    """What placing needs of Stripe (sync/stripe/gateway.py's StripeGateway)."""

    async def subscription_periods(self, customer_id: str) -> SubscriptionPeriods | None: ...


@dataclass(frozen=True, slots=True)
class Stamp:
    """The timestamp a batch is sent with, and why it is not its window's start if not."""

    timestamp: int
    placement: Placement


def place(
    window_start: int,
    periods: SubscriptionPeriods,
    now: float,
    *,
    margin: float = FINALIZATION_MARGIN_SECONDS,
) -> Stamp:
    """The stamp of usage served in the window starting at `window_start` (Unix seconds)."""
    placement: Placement = "own"
    target = window_start
    if target < periods.start:
        target, placement = periods.start, "before_subscription"
    if target >= periods.period_start:
        return Stamp(target, placement)
    draft = periods.draft_for(target)
    if draft is not None and draft.finalizes_at - now > margin:
        return Stamp(target, placement)
    return Stamp(periods.period_start, "carried_forward")


@dataclass(frozen=True, slots=True)
class StampSlot:
    """The minutes this node stamps in: those whose number modulo `slots` is `slot`
    (billing.stamp_slots and billing.stamp_slot). With one slot, every minute."""

    slot: int = 0
    slots: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.slot < self.slots:
            raise ConfigError(
                f"billing.stamp_slot ({self.slot}) must be below billing.stamp_slots ({self.slots})"
            )

    def owns(self, timestamp: int) -> bool:
        return self.slots == 1 or (timestamp // MINUTE) % self.slots == self.slot


def slotted(stamp: Stamp, periods: SubscriptionPeriods, slot: StampSlot) -> Stamp:
    """`stamp` moved into a minute of this node's slot, within the same billing period:
    back to the latest such minute at or before it, or, when that falls before the period's
    start, forward to the first after it (at most `slots - 1` minutes either way; a period
    starts on a minute of any slot). Stripe's summaries of that minute then hold this
    node's usage only."""
    if slot.owns(stamp.timestamp):
        return stamp
    minute = stamp.timestamp // MINUTE
    back = (minute - (minute - slot.slot) % slot.slots) * MINUTE
    if back >= _period_start(stamp.timestamp, periods):
        return Stamp(back, stamp.placement)
    return Stamp((minute + (slot.slot - minute) % slot.slots) * MINUTE, stamp.placement)


def _period_start(timestamp: int, periods: SubscriptionPeriods) -> int:
    """The start of the period holding `timestamp` (its draft's, or the current one's)."""
    draft = periods.draft_for(timestamp)
    if draft is not None:
        return max(draft.period_start, periods.start)
    return periods.period_start if timestamp >= periods.period_start else periods.start


def still_invoiced(
    timestamp: int,
    periods: SubscriptionPeriods,
    now: float,
    *,
    margin: float = RESEND_MARGIN_SECONDS,
) -> bool:
    """Whether usage stamped `timestamp` and recorded by Stripe now reaches an invoice: in
    the current period (or later), or in an ended one whose draft finalizes more than
    `margin` from now (room for the call)."""
    if timestamp < periods.start:
        return False
    if timestamp >= periods.period_start:
        return True
    draft = periods.draft_for(timestamp)
    return draft is not None and draft.finalizes_at - now > margin


@dataclass
class PeriodBook:
    """The customers' periods, read from Stripe when not known or no longer current."""

    gateway: PeriodsGateway
    ttl: float = PERIODS_TTL_SECONDS
    margin: float = FINALIZATION_MARGIN_SECONDS
    # Hears each reading from Stripe (customer, periods, now): the ledger keeps it locally.
    on_read: Callable[[str, SubscriptionPeriods, float], Awaitable[None]] | None = None
    # The account's invoice finalization grace (stripe.invoice_grace_hours, which
    # `stripe bootstrap` reads back): how long after a renewal the ended period's draft
    # still takes usage.
    grace: float = 3600.0
    # When (microseconds, the node's clock) a webhook last changed the customer's periods
    # or invoices in node.sqlite; a read older than that is read again.
    changed_at: Callable[[str], Awaitable[int]] | None = None
    # customer -> (periods, valid until (the flush's clock), read at (microseconds))
    _known: dict[str, tuple[SubscriptionPeriods | None, float, int]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def periods(self, customer_id: str, now: float) -> SubscriptionPeriods | None:
        """The customer's periods as of `now`; None while it has no live subscription."""
        lock = self._locks.setdefault(customer_id, asyncio.Lock())
        async with lock:
            known = self._known.get(customer_id)
            if (
                known is not None
                and now < known[1]
                and not await self._changed(customer_id, known[2])
            ):
                return known[0]
            read_at = now_us()
            periods = await self.gateway.subscription_periods(customer_id)
            self._known[customer_id] = (periods, self._valid_until(periods, now), read_at)
            if periods is not None and self.on_read is not None:
                await self.on_read(customer_id, periods, now)
            return periods

    async def _changed(self, customer_id: str, read_at: int) -> bool:
        return self.changed_at is not None and await self.changed_at(customer_id) >= read_at

    def forget(self, customer_id: str) -> None:
        """Read the customer's periods again next time (a webhook said they changed)."""
        self._known.pop(customer_id, None)

    def _valid_until(self, periods: SubscriptionPeriods | None, now: float) -> float:
        until = now + self.ttl
        if periods is None:
            return until
        deadlines = [d.finalizes_at - self.margin for d in periods.drafts]
        if (
            periods.start < periods.period_start
            and now < periods.period_start + self.grace - self.margin
            and periods.draft_for(periods.period_start - 1) is None
        ):
            until = min(until, now + DRAFT_RECHECK_SECONDS)
        return min(until, periods.period_end, *[d for d in deadlines if d > now])
