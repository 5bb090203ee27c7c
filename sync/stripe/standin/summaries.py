"""Meter event summaries: `GET /v1/billing/meters/{id}/event_summaries`, as Stripe documents.

`customer`, `start_time` (inclusive) and `end_time` (exclusive) are required and must fall on
minute boundaries; with `value_grouping_window=hour` on hour boundaries, with `day` on UTC
midnights. The answer is a list of `billing.meter_event_summary` objects, newest window
first, with `limit` (1-100, default 10) and `starting_after`/`ending_before` cursors on their
ids. Every counted event lies in its window by its `timestamp`, however late it arrived:
a summary counts usage that a finalized invoice never will (sync/stripe/standin/statements.py).
Events refused by asynchronous validation are not counted. With the `summary_lag` setting,
events received in the last seconds are not counted yet (Stripe aggregates asynchronously
and documents no bound).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sync.stripe.standin.faults import StripeFault, missing
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.lists import page
from sync.stripe.standin.meters import aggregate, meter

WINDOWS = {"hour": 3600, "day": 86_400}


def event_summaries(
    account: Account, meter_id: str, query: Mapping[str, Any], lag: float = 0.0
) -> dict[str, Any]:
    found = meter(account, meter_id)
    for name in ("customer", "start_time", "end_time"):
        if not query.get(name):
            raise missing(name)
    start, end = _time(query, "start_time"), _time(query, "end_time")
    window = query.get("value_grouping_window")
    step = _step(window, start, end)
    if end <= start:
        raise StripeFault(400, "end_time must be after start_time.", param="end_time")
    received_by = account.now() - lag
    records = [
        r
        for r in account.meter_events
        if r.customer == query["customer"] and r.meter == meter_id and r.received <= received_by
    ]
    formula = found["default_aggregation"]["formula"]
    summaries = []
    for low in range(start, end, step):
        high = min(low + step, end)
        inside = [r for r in records if low <= r.timestamp < high]
        summaries.append(
            _summary(meter_id, str(query["customer"]), low, high, float(aggregate(inside, formula)))
        )
    summaries.reverse()  # newest window first, as Stripe's example lists them
    return page(summaries, query, f"/v1/billing/meters/{meter_id}/event_summaries")


def _time(query: Mapping[str, Any], param: str) -> int:
    try:
        value = int(str(query[param]))
    except ValueError:
        raise StripeFault(400, f"Invalid integer: {query[param]}", param=param) from None
    if value % 60:
        raise StripeFault(400, f"{param} must be aligned with minute boundaries.", param=param)
    return value


def _step(window: Any, start: int, end: int) -> int:
    if window is None:
        return end - start if end > start else 60
    if window not in WINDOWS:
        raise StripeFault(
            400,
            "Invalid value_grouping_window: must be one of day or hour",
            param="value_grouping_window",
        )
    step = WINDOWS[window]
    for param, value in (("start_time", start), ("end_time", end)):
        if value % step:
            unit = "hour boundaries" if window == "hour" else "UTC day boundaries (00:00 UTC)"
            raise StripeFault(
                400,
                f"{param} must be aligned with {unit} when value_grouping_window is {window}.",
                param=param,
            )
    return step


def _summary(meter_id: str, customer: str, start: int, end: int, value: float) -> dict[str, Any]:
    digest = hashlib.sha256(f"{meter_id}:{customer}:{start}:{end}".encode()).hexdigest()[:40]
    return {
        "id": f"mtrusg_test_{digest}",
        "object": "billing.meter_event_summary",
        "aggregated_value": value,
        "end_time": end,
        "livemode": False,
        "meter": meter_id,
        "start_time": start,
    }
