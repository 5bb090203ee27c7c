"""Invoices in the stand-in: made at a subscription's start and at each period end, kept in
draft for the account's finalization grace, then finalized (and paid, or sent), as Stripe
documents for subscriptions with usage-based prices.

- The first invoice (`billing_reason: subscription_create`) bills licensed prices for the
  first period (prorated when the anchor makes it short) and, in flexible mode, the usage
  of a backdated start; it is finalized at once for `charge_automatically`, an hour later
  for `send_invoice`, whatever the grace.
- At each period end (`subscription_cycle`), an invoice is created `draft` (event
  `invoice.created`) whose `period_start`/`period_end` look back on the period that ended;
  a metered line counts the usage of its span, a licensed line bills the next period.
  `automatically_finalizes_at` is the period end plus the account's grace (Settings, 1 to
  72 hours). Stripe waits for every webhook endpoint to answer 2xx to `invoice.created`
  before it finalizes, up to 72 hours; so does the stand-in, unless a custom
  `automatically_finalizes_at` was set on the invoice (as Stripe documents).
- At finalization each metered line's quantity is counted from the usage received until
  then, and frozen: usage for that span received afterwards is never invoiced. Then
  `invoice.finalized`; `charge_automatically` (and any zero invoice) is paid at once
  (`invoice.paid`, no payment method is simulated); `send_invoice` stays `open` with a
  `due_date`, and is `invoice.sent` when the customer has an email (else it is flagged
  undelivered in the admin report: Stripe sends nothing without one).

Amounts: per unit, graduated or volume tiers on the line's quantity (one line per item,
whatever the tiers), rounded half up to cents; a negative usage total bills 0.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sync.stripe.standin.faults import StripeFault, no_such
from sync.stripe.standin.invoice_objects import (
    Invoice,
    Line,
    amount_due,
    licensed_line,
    metered_line,
    to_stripe,
)
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.lists import newest_first
from sync.stripe.standin.meters import aggregate, usage_of
from sync.stripe.standin.periods import DAY, Span, metered_spans, period_at

FIRST_SEND_INVOICE_DELAY_SECONDS = 3600
WEBHOOK_WAIT_LIMIT_SECONDS = 72 * 3600
MAX_SCHEDULE_SECONDS = 5 * 366 * DAY


# Making invoices.


def first_invoice(
    account: Account, subscription: dict[str, Any], start: int, period: tuple[int, int]
) -> Invoice:
    """The invoice made with the subscription: licensed prices for the first period, and a
    backdated start's time (flexible mode: usage and licensed prices for each natural
    period in it; classic: one prorated licensed line)."""
    created = subscription["created"]
    lines: list[Line] = []
    pieces = _backdated_pieces(subscription, start, period[0])
    for item in subscription["items"]["data"]:
        recurring = item["price"]["recurring"]
        if recurring["usage_type"] == "licensed":
            for s, e in [*pieces, period]:
                lines.append(licensed_line(item, s, e, _fraction(subscription, recurring, s, e)))
    invoice = _invoice(account, subscription, "subscription_create", (created, created), lines)
    if subscription["billing_mode"]["type"] == "flexible":
        for s, e in pieces:
            _bill_backdated_usage(account, subscription, invoice, s, e)
    immediate = subscription["collection_method"] == "charge_automatically"
    invoice.finalizes_at = created + (0 if immediate else FIRST_SEND_INVOICE_DELAY_SECONDS)
    invoice.custom_schedule = True  # the grace and the webhook wait do not apply
    _announce(account, subscription, invoice)
    if immediate:
        finalize(account, invoice, created)
    return invoice


def _backdated_pieces(
    subscription: Mapping[str, Any], start: int, end: int
) -> list[tuple[int, int]]:
    if start >= end:
        return []
    if subscription["billing_mode"]["type"] == "classic":
        return [(start, end)]
    recurring = subscription["items"]["data"][0]["price"]["recurring"]
    pieces, cursor = [], end
    while cursor > start:
        natural = period_at(subscription["billing_cycle_anchor"], recurring, cursor - 1)
        pieces.append((max(natural[0], start), cursor))
        cursor = natural[0]
    return sorted(pieces)


def _bill_backdated_usage(
    account: Account, subscription: Mapping[str, Any], invoice: Invoice, start: int, end: int
) -> None:
    for span in metered_spans(subscription, start, end, invoice=invoice.id):
        account.spans.append(span)
        invoice.lines.append(metered_line(span))


def _fraction(
    subscription: Mapping[str, Any], recurring: Mapping[str, Any], start: int, end: int
) -> Decimal:
    natural = period_at(subscription["billing_cycle_anchor"], recurring, start)
    if start >= subscription["billing_cycle_anchor"] and (start, end) == natural:
        return Decimal(1)
    return Decimal(end - start) / Decimal(natural[1] - natural[0])


def cycle_invoice(
    account: Account,
    subscription: dict[str, Any],
    ended: tuple[int, int],
    spans: list[Span],
    *,
    next_period: tuple[int, int] | None,
    reason: str = "subscription_cycle",
) -> Invoice:
    """The invoice made at a period end: the ended period's usage, the next period's
    licensed prices; draft until the grace (and the webhooks) allow finalizing it."""
    lines = [metered_line(span) for span in spans]
    for item in subscription["items"]["data"]:
        if next_period and item["price"]["recurring"]["usage_type"] == "licensed":
            lines.append(licensed_line(item, *next_period, Decimal(1)))
    start = min([ended[0], *(s.start for s in spans)])
    invoice = _invoice(account, subscription, reason, (start, ended[1]), lines)
    for span in spans:
        span.invoice = invoice.id
    invoice.finalizes_at = ended[1] + account.settings.finalization_grace_seconds
    _announce(account, subscription, invoice)
    return invoice


def _invoice(
    account: Account,
    subscription: Mapping[str, Any],
    reason: str,
    period: tuple[int, int],
    lines: list[Line],
) -> Invoice:
    invoice = Invoice(
        f"in_{secrets.token_hex(12)}",
        subscription["customer"],
        subscription["id"],
        reason,
        subscription["collection_method"],
        subscription["days_until_due"],
        period[1],
        period[0],
        period[1],
        lines,
        subscription["currency"],
    )
    account.invoices[invoice.id] = invoice
    return invoice


def _announce(account: Account, subscription: dict[str, Any], invoice: Invoice) -> None:
    subscription["latest_invoice"] = invoice.id
    event = account.events.emit("invoice.created", to_stripe(account, invoice), invoice.created)
    invoice.created_event = event["id"]


# Finalizing and paying.


def finalization_due(account: Account, invoice: Invoice, at: int) -> bool:
    """Whether a draft is to be finalized at `at`: its time has come, and every webhook
    endpoint acknowledged its `invoice.created` (or 72 hours passed since)."""
    if invoice.status != "draft" or invoice.finalizes_at is None or at < invoice.finalizes_at:
        return False
    if invoice.custom_schedule or invoice.created_event is None:
        return True
    acknowledged = account.events.acknowledged(invoice.created_event)
    return acknowledged or at >= invoice.created + WEBHOOK_WAIT_LIMIT_SECONDS


def finalize(account: Account, invoice: Invoice, at: int) -> None:
    """Count and freeze each metered line, number the invoice, then pay it or send it."""
    for line in invoice.lines:
        if line.span is not None:
            records = usage_of(account, invoice.customer, line.span.meter, line.start, line.end)
            formula = account.meters[line.span.meter]["default_aggregation"]["formula"]
            line.span.quantity = max(Decimal(0), aggregate(records, formula))
            for record in records:
                record.invoice = invoice.id
    account.invoice_numbers += 1
    invoice.number = f"STANDIN-{account.invoice_numbers:04d}"
    invoice.status, invoice.finalized_at = "open", at
    if invoice.collection_method == "send_invoice":
        invoice.due_date = at + (invoice.days_until_due or 0) * DAY
    account.events.emit("invoice.finalized", to_stripe(account, invoice), at)
    if invoice.collection_method == "charge_automatically" or amount_due(account, invoice) == 0:
        invoice.status, invoice.paid_at = "paid", at
        account.events.emit("invoice.paid", to_stripe(account, invoice), at)
    elif account.customers[invoice.customer]["email"]:
        invoice.sent = True
        account.events.emit("invoice.sent", to_stripe(account, invoice), at)


def update(account: Account, invoice_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """`POST /v1/invoices/{id}`: a draft's `automatically_finalizes_at` (up to 5 years
    ahead), `auto_advance` and `metadata`."""
    invoice = get(account, invoice_id)
    now = account.time_of(invoice.customer)
    if invoice.status != "draft" and (
        "automatically_finalizes_at" in form or "auto_advance" in form
    ):
        raise StripeFault(
            400, f"You can only modify draft invoices; {invoice.id} is {invoice.status}."
        )
    if "automatically_finalizes_at" in form:
        at = int(str(form["automatically_finalizes_at"]))
        if not now < at <= now + MAX_SCHEDULE_SECONDS:
            raise StripeFault(
                400,
                "automatically_finalizes_at must be in the future and within 5 years.",
                param="automatically_finalizes_at",
            )
        invoice.finalizes_at, invoice.custom_schedule = at, True
    if form.get("auto_advance") == "false":
        invoice.finalizes_at = None
    if isinstance(form.get("metadata"), dict):
        invoice.metadata.update({str(k): str(v) for k, v in form["metadata"].items()})
    shown = to_stripe(account, invoice)
    account.events.emit("invoice.updated", shown, now)
    return shown


# Reading.


def get(account: Account, invoice_id: str) -> Invoice:
    if invoice_id not in account.invoices:
        raise no_such("invoice", invoice_id)
    return account.invoices[invoice_id]


def list_invoices(account: Account, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Newest first, by `customer`, `subscription` and `status`."""
    found = [
        i
        for i in account.invoices.values()
        if ("customer" not in query or i.customer == query["customer"])
        and ("subscription" not in query or i.subscription == query["subscription"])
        and ("status" not in query or i.status == query["status"])
    ]
    found = newest_first(found, lambda i: i.created)
    return [to_stripe(account, i) for i in found]
