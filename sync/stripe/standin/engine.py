"""What happens in the stand-in as time passes: periods end, invoices are made and finalized,
meter errors are reported, events are delivered, test clocks advance.

Stripe does all of this asynchronously, and so does the stand-in: a background task
(`Engine.run`) wakes every `TICK_SECONDS` and brings the customers without a test clock up to
the stand-in's clock, reports meter events that asynchronous validation refused (thin
events), and delivers due events. A test clock's advance is worked through in the
background too: every period end and finalization due on the way happens at its own time
(the clock's frozen time steps through them, so objects and events carry those times), each
one's events are delivered (first attempt) before the next, and only then is the clock
`ready` at its target. `catch_up()` lets a test (or the admin clock endpoint) wait until
everything due at the stand-in's clock has happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from sync.stripe.standin import invoice_objects, invoices
from sync.stripe.standin.billing_periods import delete_customer, open_spans
from sync.stripe.standin.clocks import TestClock
from sync.stripe.standin.events import iso
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.periods import period_at

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
WEBHOOK_WAIT = invoices.WEBHOOK_WAIT_LIMIT_SECONDS
DEFAULT_ADVANCE_DELAY = 0.05  # Stripe's advances "take a few seconds"
DEFAULT_ERROR_SAMPLES = 5  # Stripe sends "sample errors"; how many is not published


class Engine:
    """Moves the account of `account()` through time; one per stand-in."""

    def __init__(self, account: Callable[[], Account]) -> None:
        self._account = account
        self.reset()
        self.lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._advances: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.advance_delay = DEFAULT_ADVANCE_DELAY
        self.error_samples = DEFAULT_ERROR_SAMPLES

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in [self._task, *self._advances]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.catch_up()
            except Exception:  # a bug in a rule: say so, and keep time moving
                log.exception("the stand-in could not bring its account up to date")

    async def catch_up(self) -> None:
        """Everything due at the stand-in's clock, for customers without a test clock."""
        async with self.lock:
            account = self._account()
            for clock in account.test_clocks.expire(account.now()):
                for customer in clock.customers:
                    if customer in account.customers and not account.customers[customer]["deleted"]:
                        delete_customer(account, customer)
            await self._work_through(account, None, int(account.now()))
            self._report_meter_errors(account)
            await self.deliver()

    async def deliver(self) -> None:
        if self._session is not None:
            await self._account().events.deliver_due(self._session)

    def advance_clock(self, clock: TestClock) -> None:
        """Work a test clock through to its target, in the background."""
        task = asyncio.create_task(self._advance(clock))
        self._advances.add(task)
        task.add_done_callback(self._advances.discard)

    async def _advance(self, clock: TestClock) -> None:
        await asyncio.sleep(self.advance_delay)
        async with self.lock:
            account = self._account()
            assert clock.target is not None
            await self._work_through(account, clock, clock.target)
            clock.frozen_time, clock.target = clock.target, None
            account.events.emit("test_helpers.test_clock.ready", clock.to_stripe(), account.now())
            await self.deliver()

    async def _work_through(self, account: Account, clock: TestClock | None, target: int) -> None:
        """Every period end and finalization due by `target`, in time order."""
        while (due := _next_happening(account, clock, target)) is not None:
            at, happen = due
            if clock is not None:
                clock.frozen_time = max(clock.frozen_time, at)
            happen(at)
            await self.deliver()

    def _report_meter_errors(self, account: Account) -> None:
        """One thin event per meter for the events refused since the last report, and one
        `no_meter_found` for events no meter took."""
        fresh = [r for r in account.meter_events if r.dropped and not r.reported]
        if not fresh:
            return
        groups: dict[str | None, list[Any]] = {}
        for record in fresh:
            record.reported = True
            key = None if record.dropped == "no_meter" else record.meter
            groups.setdefault(key, []).append(record)
        for meter_id, records in groups.items():
            data = self._report(records)
            if meter_id is None:
                account.events.emit_thin("v1.billing.meter.no_meter_found", data, None)
            else:
                related = {
                    "id": meter_id,
                    "type": "billing.meter",
                    "url": f"/v1/billing/meters/{meter_id}",
                }
                account.events.emit_thin("v1.billing.meter.error_report_triggered", data, related)

    def _report(self, records: list[Any]) -> dict[str, Any]:
        by_code: dict[str, list[Any]] = {}
        for record in records:
            by_code.setdefault(record.dropped, []).append(record)
        count = len(records)
        return {
            "developer_message_summary": f"There {'is' if count == 1 else 'are'} {count} "
            f"invalid event{'' if count == 1 else 's'}",
            "reason": {
                "error_count": count,
                "error_types": [
                    {
                        "code": code,
                        "error_count": len(group),
                        "sample_errors": [
                            {
                                "error_message": r.error_message,
                                "request": {"identifier": r.identifier},
                            }
                            for r in group[: self.error_samples]
                        ],
                    }
                    for code, group in by_code.items()
                ],
            },
            "validation_start": iso(min(r.received for r in records)),
            "validation_end": iso(max(r.received for r in records) + 1),
        }


def _next_happening(
    account: Account, clock: TestClock | None, target: int
) -> tuple[int, Callable[[int], None]] | None:
    """The earliest period end or finalization due by `target` among the customers of
    `clock` (None: the customers without a test clock)."""
    scope = clock.id if clock else None
    best: tuple[int, Callable[[int], None]] | None = None
    for subscription in account.subscriptions.values():
        if subscription["test_clock"] != scope or subscription["status"] == "canceled":
            continue
        end = subscription["items"]["data"][0]["current_period_end"]
        if end <= target and (best is None or end < best[0]):
            best = (end, lambda at, s=subscription: renew(account, s, at))
    for invoice in account.invoices.values():
        customer = account.customers[invoice.customer]
        if customer["test_clock"] != scope or invoice.status != "draft":
            continue
        at = _finalization_time(account, invoice)
        if at is not None and at <= target and (best is None or at < best[0]):
            best = (at, lambda when, i=invoice: invoices.finalize(account, i, when))
    return best


def _finalization_time(account: Account, invoice: invoice_objects.Invoice) -> int | None:
    if invoice.finalizes_at is None:
        return None
    if invoice.custom_schedule or invoice.created_event is None:
        return invoice.finalizes_at
    if account.events.acknowledged(invoice.created_event):
        return invoice.finalizes_at
    return max(invoice.finalizes_at, invoice.created + WEBHOOK_WAIT)


def renew(account: Account, subscription: dict[str, Any], at: int) -> None:
    """A period end: the renewal invoice for the ended period, then the next period."""
    items = subscription["items"]["data"]
    ended = (items[0]["current_period_start"], items[0]["current_period_end"])
    following = period_at(subscription["billing_cycle_anchor"], items[0]["price"]["recurring"], at)
    spans = [
        s
        for s in account.spans
        if s.subscription == subscription["id"] and s.invoice is None and not s.closed
    ]
    previous = {
        "items": {
            "data": [
                {
                    "id": item["id"],
                    "current_period_start": item["current_period_start"],
                    "current_period_end": item["current_period_end"],
                }
                for item in items
            ]
        }
    }
    for item in items:
        item["current_period_start"], item["current_period_end"] = following
    invoices.cycle_invoice(account, subscription, ended, spans, next_period=following)
    open_spans(account, subscription, *following)
    account.events.emit("customer.subscription.updated", subscription, at, previous)
