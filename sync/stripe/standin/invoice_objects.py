"""An invoice of the stand-in as an object: its lines, what they count and cost, and its
shape on the wire (API 2025-03-31 and later: `parent` on the invoice and its lines, line
`pricing`). The lifecycle (made, finalized, paid) is sync/stripe/standin/invoices.py.

A metered line counts its span's usage (the meter's formula over the events stamped in
[start, end)) until the invoice is finalized, then the quantity frozen then; a negative
total bills 0. Amounts: per unit, graduated or volume tiers on the line's quantity (one line
per item, whatever the tiers), rounded half up to cents, times the line's proration.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sync.stripe.standin.ledger import Account
from sync.stripe.standin.meters import aggregate, usage_of
from sync.stripe.standin.periods import Span
from sync.stripe.standin.pricing import price_amount

TIMES = "\u00d7"  # the multiplication sign of Stripe's line descriptions ("3 x name")


@dataclass
class Line:
    """One invoice line: a metered span, or a licensed price for a stretch of time."""

    id: str
    item: str
    price: str
    start: int
    end: int
    span: Span | None = None
    quantity: int = 0  # licensed
    proration: Decimal = Decimal(1)


@dataclass
class Invoice:
    id: str
    customer: str
    subscription: str
    billing_reason: str
    collection_method: str
    days_until_due: int | None
    created: int
    period_start: int
    period_end: int
    lines: list[Line]
    currency: str
    status: str = "draft"
    finalizes_at: int | None = None  # None: auto_advance off
    custom_schedule: bool = False
    created_event: str | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    number: str | None = None
    due_date: int | None = None
    sent: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


def line_quantity(account: Account, customer: str, line: Line) -> Decimal:
    if line.span is None:
        return Decimal(line.quantity)
    if line.span.quantity is not None:
        return line.span.quantity
    records = usage_of(account, customer, line.span.meter, line.start, line.end)
    formula = account.meters[line.span.meter]["default_aggregation"]["formula"]
    return max(Decimal(0), aggregate(records, formula))


def line_amount(account: Account, customer: str, line: Line) -> int:
    quantity = line_quantity(account, customer, line)
    amount = price_amount(account.prices[line.price], quantity)
    return int((Decimal(amount) * line.proration).to_integral_value())


def amount_due(account: Account, invoice: Invoice) -> int:
    return sum(line_amount(account, invoice.customer, line) for line in invoice.lines)


def to_stripe(account: Account, invoice: Invoice) -> dict[str, Any]:
    """The invoice in Stripe's shape (API 2025-03-31 and later: `parent`, line `pricing`)."""
    lines = [_line_to_stripe(account, invoice, line) for line in invoice.lines]
    total = sum(line["amount"] for line in lines)
    paid = total if invoice.status == "paid" else 0
    customer = account.customers[invoice.customer]
    subscription = account.subscriptions[invoice.subscription]
    return {
        "id": invoice.id,
        "object": "invoice",
        "customer": invoice.customer,
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "status": invoice.status,
        "billing_reason": invoice.billing_reason,
        "collection_method": invoice.collection_method,
        "created": invoice.created,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "automatically_finalizes_at": invoice.finalizes_at if invoice.status == "draft" else None,
        "auto_advance": invoice.finalizes_at is not None or invoice.status != "draft",
        "effective_at": invoice.finalized_at,
        "status_transitions": {
            "finalized_at": invoice.finalized_at,
            "paid_at": invoice.paid_at,
            "marked_uncollectible_at": None,
            "voided_at": None,
        },
        "number": invoice.number,
        "due_date": invoice.due_date,
        "currency": invoice.currency,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice.id}/lines",
        },
        "subtotal": total,
        "total": total,
        "amount_due": total,
        "amount_paid": paid,
        "amount_remaining": total - paid,
        "attempted": invoice.status == "paid",
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "subscription": invoice.subscription,
                "metadata": subscription["metadata"],
                "subscription_proration_date": None,
            },
        },
        "metadata": invoice.metadata,
        "livemode": False,
        "test_clock": customer["test_clock"],
    }


def _line_to_stripe(account: Account, invoice: Invoice, line: Line) -> dict[str, Any]:
    price = account.prices[line.price]
    quantity = line_quantity(account, invoice.customer, line)
    whole = quantity == quantity.to_integral_value()
    return {
        "id": line.id,
        "object": "line_item",
        "amount": line_amount(account, invoice.customer, line),
        "currency": invoice.currency,
        "description": f"{quantity} {TIMES} {price.get('nickname') or price['product']}",
        "invoice": invoice.id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": line.proration != 1,
                "proration_details": {"credited_items": None},
                "subscription": invoice.subscription,
                "subscription_item": line.item,
            },
        },
        "period": {"start": line.start, "end": line.end},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "quantity": int(quantity) if whole else None,
        "quantity_decimal": str(quantity),
        "taxes": [],
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
    }


def metered_line(span: Span) -> Line:
    return Line(f"il_{secrets.token_hex(12)}", span.item, span.price, span.start, span.end, span)


def licensed_line(item: Mapping[str, Any], start: int, end: int, fraction: Decimal) -> Line:
    return Line(
        f"il_{secrets.token_hex(12)}",
        item["id"],
        item["price"]["id"],
        start,
        end,
        quantity=int(item["quantity"] or 1),
        proration=fraction,
    )
