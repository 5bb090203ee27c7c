"""The billing calendar: billing dates from an anchor in a price's interval, and the spans
of metered usage that invoice lines bill (sync/stripe/standin/billing_periods.py).

Stripe's rules: a monthly (or yearly) anchor keeps its day of month, on the last day of
shorter months (an anchor on January 31 bills February 28, then March 31); weekly and daily
ones step by 7 or 1 days; all in UTC, keeping the anchor's time of day.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

DAY = 86_400


@dataclass
class Span:
    """A stretch of one metered item's usage that one invoice line bills."""

    subscription: str
    item: str
    customer: str
    meter: str
    price: str
    start: int
    end: int
    invoice: str | None = None  # the invoice billing it; None while its period runs
    quantity: Decimal | None = None  # frozen when that invoice is finalized
    closed: bool = False  # its subscription was canceled: nothing bills it


def boundary(anchor: int, recurring: Mapping[str, Any], k: int) -> int:
    """The k-th billing date from `anchor` (k may be negative), in UTC, keeping the
    anchor's day of month (clamped to the month's last day) and time of day."""
    count = int(recurring.get("interval_count", 1)) * k
    interval = recurring["interval"]
    if interval in ("day", "week"):
        return anchor + count * DAY * (7 if interval == "week" else 1)
    months = count * (12 if interval == "year" else 1)
    at = datetime.fromtimestamp(anchor, UTC)
    year, month = divmod(at.month - 1 + months, 12)
    year += at.year
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return int(at.replace(year=year, month=month + 1, day=day).timestamp())


def period_at(anchor: int, recurring: Mapping[str, Any], at: int) -> tuple[int, int]:
    """The natural billing period [start, end) around `at`."""
    k = (at - anchor) // (28 * DAY) + 1  # an overestimate for every interval: walk back
    while boundary(anchor, recurring, k) > at:
        k -= 1
    while boundary(anchor, recurring, k + 1) <= at:
        k += 1
    return boundary(anchor, recurring, k), boundary(anchor, recurring, k + 1)


def metered_spans(
    subscription: Mapping[str, Any], start: int, end: int, invoice: str | None = None
) -> list[Span]:
    """One span over [start, end) for each metered item of `subscription`."""
    return [
        Span(
            subscription["id"],
            item["id"],
            subscription["customer"],
            item["price"]["recurring"]["meter"],
            item["price"]["id"],
            start,
            end,
            invoice=invoice,
        )
        for item in subscription["items"]["data"]
        if item["price"]["recurring"]["usage_type"] == "metered"
    ]
