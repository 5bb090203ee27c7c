"""What the stand-in's account bills each customer: the upcoming invoice
(`POST /v1/invoices/create_preview`), and the statement tests compare with what was served.

Every counted meter event of a customer is in exactly one state:

    invoiced         counted by a finalized invoice
    pending          in a span whose invoice is not finalized yet (the running period, or
                     a draft): it will be invoiced
    late             in a span whose invoice was finalized before the event arrived: Stripe
                     accepted it and never invoices it
    outside_periods  in no span of the customer's subscriptions (no subscription on the
                     meter's price, usage before the start, a canceled subscription)

`billed(customer)` is invoiced + pending, in units of the events' values; `metered` is what
the meter holds (every counted event, what event summaries show); `dropped` is what
asynchronous validation refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sync.stripe.standin import invoice_objects
from sync.stripe.standin.billing_periods import LIVE_STATUSES, subscription
from sync.stripe.standin.faults import missing
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.meters import UsageRecord
from sync.stripe.standin.periods import Span

STATES = ("invoiced", "pending", "late", "outside_periods")


def usage_state(account: Account, record: UsageRecord) -> str:
    if record.invoice is not None:
        return "invoiced"
    span = _covering(account, record)
    if span is None:
        return "outside_periods"
    if span.invoice is None or account.invoices[span.invoice].status == "draft":
        return "pending"
    return "late"


def _covering(account: Account, record: UsageRecord) -> Span | None:
    return next(
        (
            s
            for s in account.spans
            if not s.closed
            and s.customer == record.customer
            and s.meter == record.meter
            and s.start <= record.timestamp < s.end
        ),
        None,
    )


def usage_totals(account: Account) -> dict[str, dict[str, Decimal]]:
    """Per customer: units metered, dropped, and in each state."""
    totals: dict[str, dict[str, Decimal]] = {}
    for record in account.meter_events:
        counter = totals.setdefault(record.customer, defaultdict(Decimal))
        if not record.counts():
            counter["dropped"] += record.value
            continue
        counter["metered"] += record.value
        counter[usage_state(account, record)] += record.value
    return {
        customer: {name: Decimal(counter[name]) for name in ("metered", "dropped", *STATES)}
        for customer, counter in totals.items()
    }


def billed(account: Account, customer: str) -> Decimal:
    """Units that reach an invoice: invoiced, or pending in a period still to be invoiced."""
    totals = usage_totals(account).get(customer, {})
    return totals.get("invoiced", Decimal(0)) + totals.get("pending", Decimal(0))


def statement(account: Account, customer: str) -> dict[str, Any]:
    """A customer's invoices, oldest first, each line with its period and quantity, and
    its usage in each state."""
    totals = usage_totals(account).get(customer, {})
    found = sorted(
        (i for i in account.invoices.values() if i.customer == customer),
        key=lambda i: (i.created, i.id),
    )
    return {
        "customer": customer,
        "usage": {
            name: number(totals.get(name, Decimal(0))) for name in ("metered", "dropped", *STATES)
        },
        "invoices": [_invoice_summary(account, invoice) for invoice in found],
    }


def _invoice_summary(account: Account, invoice: invoice_objects.Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "status": invoice.status,
        "billing_reason": invoice.billing_reason,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "finalized_at": invoice.finalized_at,
        "amount_due": invoice_objects.amount_due(account, invoice),
        "undelivered": invoice.collection_method == "send_invoice"
        and invoice.status == "open"
        and not invoice.sent,
        "lines": [
            {
                "price": line.price,
                "metered": line.span is not None,
                "period": {"start": line.start, "end": line.end},
                "quantity": number(invoice_objects.line_quantity(account, invoice.customer, line)),
                "amount": invoice_objects.line_amount(account, invoice.customer, line),
            }
            for line in invoice.lines
        ],
    }


def number(value: Decimal) -> int | float:
    """A quantity for JSON: an int when it is whole."""
    return int(value) if value == value.to_integral_value() else float(value)


def preview(account: Account, form: Mapping[str, Any]) -> dict[str, Any]:
    """The invoice the running period will bring: each metered item's usage so far in its
    current span, each licensed item for the next period (Stripe's `create_preview`)."""
    if form.get("subscription"):
        found = subscription(account, str(form["subscription"]))
    elif form.get("customer"):
        account.customer(str(form["customer"]), param="customer")
        live = [
            s
            for s in account.subscriptions.values()
            if s["customer"] == form["customer"] and s["status"] in LIVE_STATUSES
        ]
        if not live:
            raise _no_upcoming(str(form["customer"]))
        found = max(live, key=lambda s: (s["created"], s["id"]))
    else:
        raise missing("customer")
    spans = [
        s
        for s in account.spans
        if s.subscription == found["id"] and s.invoice is None and not s.closed
    ]
    item = found["items"]["data"][0]
    period = (item["current_period_start"], item["current_period_end"])
    upcoming = invoice_objects.Invoice(
        f"upcoming_{found['id']}",
        found["customer"],
        found["id"],
        "upcoming",
        found["collection_method"],
        found["days_until_due"],
        period[1],
        period[0],
        period[1],
        [invoice_objects.metered_line(span) for span in spans],
        found["currency"],
    )
    for item in found["items"]["data"]:
        if item["price"]["recurring"]["usage_type"] == "licensed":
            length = period[1] - period[0]
            upcoming.lines.append(
                invoice_objects.licensed_line(item, period[1], period[1] + length, Decimal(1))
            )
    shown = invoice_objects.to_stripe(account, upcoming)
    shown["id"] = None
    return shown


def _no_upcoming(customer: str) -> Exception:
    from sync.stripe.standin.faults import StripeFault  # noqa: PLC0415

    return StripeFault(
        400,
        f"No upcoming invoices for customer: {customer}",
        code="invoice_upcoming_none",
    )
