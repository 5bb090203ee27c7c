"""Subscriptions and their billing periods in the stand-in, as Stripe documents them for API
versions from 2025-03-31 (periods on the items) and 2025-09-30 (flexible billing mode by
default for subscriptions made through the API).

Periods run from `billing_cycle_anchor` (default: the start) in the prices' interval
(`day`, `week`, `month`, `year` times `interval_count`); a monthly anchor on the 31st falls
on the last day of shorter months. A future anchor makes a short first period up to it
(it must come before the next natural billing date). The time is the customer's
(`Account.time_of`: its test clock, else the stand-in's clock).

Metered usage is invoiced by spans (`Span`): stretches of time whose meter events (by their
`timestamp`, start inclusive, end exclusive) one invoice line counts. A subscription has one
span per item for its current period; at the period's end the engine
(sync/stripe/standin/engine.py) gives it to the renewal invoice and opens the next. Usage
before the subscription's start lies in no span and is never invoiced, unless
`backdate_start_date` covers it: in flexible mode the backdated time is cut into natural
periods billed on the subscription's first invoice (which `charge_automatically` finalizes
at once, `send_invoice` an hour later); in classic mode the first period's span starts at
the backdated date and the first renewal invoice bills it. Canceling a subscription
(without `invoice_now`) closes its spans uninvoiced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.stripe.standin import invoices
from sync.stripe.standin.faults import StripeFault, missing, no_such
from sync.stripe.standin.ledger import Account, metadata
from sync.stripe.standin.lists import newest_first
from sync.stripe.standin.periods import boundary, metered_spans, period_at
from sync.stripe.standin.pricing import as_list, price, shown

SUBSCRIPTIONS_PER_CLOCK_CUSTOMER = 3
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")


def advance_limit(account: Account, clock_id: str) -> int | None:
    """Seconds a test clock may move: two intervals of its shortest subscription."""
    clock = account.test_clocks.get(clock_id)
    lengths = [
        boundary(clock.frozen_time, s["items"]["data"][0]["price"]["recurring"], 2)
        - clock.frozen_time
        for s in account.subscriptions.values()
        if s["test_clock"] == clock_id and s["status"] != "canceled"
    ]
    return min(lengths, default=None)


# Creating.


def create_subscription(account: Account, form: Mapping[str, Any]) -> dict[str, Any]:
    if not form.get("customer"):
        raise missing("customer")
    customer = account.customer(str(form["customer"]), param="customer")
    prices = _prices(account, form)
    recurring = prices[0]["recurring"]
    now = account.time_of(customer["id"])
    _check_clock_limit(account, customer)
    start = _start(form, now)
    anchor = _anchor(form, recurring, now)
    subscription = account.stamp(
        "sub",
        {
            "object": "subscription",
            "customer": customer["id"],
            "status": "active",
            "metadata": metadata(form),
            "currency": prices[0]["currency"],
            "start_date": start,
            "billing_cycle_anchor": anchor,
            "billing_mode": _billing_mode(form, now),
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "latest_invoice": None,
            "test_clock": customer["test_clock"],
            **_collection(form),
        },
        now,
    )
    period = (now, anchor) if anchor > now else period_at(anchor, recurring, now)
    subscription["items"] = {
        "object": "list",
        "data": [
            _item(account, subscription, found, raw, period)
            for found, raw in zip(prices, as_list(form["items"]), strict=True)
        ],
        "has_more": False,
        "url": f"/v1/subscription_items?subscription={subscription['id']}",
    }
    account.subscriptions[subscription["id"]] = subscription
    account.events.emit("customer.subscription.created", subscription, now)
    _open_spans(account, subscription, period, backdated=start < now)
    invoices.first_invoice(account, subscription, start, period)
    return subscription


def _prices(account: Account, form: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = as_list(form.get("items") or [])
    if not items:
        raise missing("items")
    found = []
    for n, item in enumerate(items):
        price_id = item.get("price") if isinstance(item, dict) else None
        if not price_id:
            raise missing(f"items[{n}][price]")
        found.append(price(account, str(price_id), param=f"items[{n}][price]"))
    if any(p["recurring"] is None for p in found):
        raise StripeFault(
            400,
            "The price specified is set to `type=one_time` but this field only accepts "
            "prices with `type=recurring`.",
            param="items",
        )
    intervals = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in found}
    if len(intervals) > 1 or len({p["currency"] for p in found}) > 1:
        raise StripeFault(
            400,
            "Currency and interval fields must match across all plans on this subscription. "
            "Found mismatch in interval field.",
            param="items",
        )
    return found


def _check_clock_limit(account: Account, customer: Mapping[str, Any]) -> None:
    if not customer["test_clock"]:
        return
    live = [
        s
        for s in account.subscriptions.values()
        if s["customer"] == customer["id"] and s["status"] != "canceled"
    ]
    if len(live) >= SUBSCRIPTIONS_PER_CLOCK_CUSTOMER:
        raise StripeFault(
            400,
            "Customers on a test clock can have at most "
            f"{SUBSCRIPTIONS_PER_CLOCK_CUSTOMER} subscriptions.",
            param="customer",
        )


def _start(form: Mapping[str, Any], now: int) -> int:
    if "backdate_start_date" not in form:
        return now
    start = _integer(form, "backdate_start_date")
    if start >= now:
        raise StripeFault(
            400, "backdate_start_date must be in the past.", param="backdate_start_date"
        )
    return start


def _anchor(form: Mapping[str, Any], recurring: Mapping[str, Any], now: int) -> int:
    if "billing_cycle_anchor" not in form:
        return now
    anchor = _integer(form, "billing_cycle_anchor")
    natural = boundary(now, recurring, 1)
    if anchor < now or anchor > natural:
        raise StripeFault(
            400,
            f"billing_cycle_anchor must be a future timestamp no later than the next natural "
            f"billing date ({natural}).",
            param="billing_cycle_anchor",
        )
    return anchor


def _billing_mode(form: Mapping[str, Any], now: int) -> dict[str, Any]:
    raw = form.get("billing_mode") or {}
    kind = raw.get("type", "flexible") if isinstance(raw, dict) else None
    if kind not in ("classic", "flexible"):
        raise StripeFault(400, "Invalid billing_mode[type].", param="billing_mode[type]")
    return {"type": kind, "updated_at": now}


def _collection(form: Mapping[str, Any]) -> dict[str, Any]:
    method = form.get("collection_method", "charge_automatically")
    if method not in ("charge_automatically", "send_invoice"):
        raise StripeFault(400, "Invalid collection_method.", param="collection_method")
    days = form.get("days_until_due")
    if method == "send_invoice" and days is None:
        raise missing("days_until_due")
    if method == "charge_automatically" and days is not None:
        raise StripeFault(
            400,
            "You can only specify `days_until_due` when `collection_method` is `send_invoice`.",
            param="days_until_due",
        )
    return {
        "collection_method": method,
        "days_until_due": None if days is None else _integer(form, "days_until_due"),
    }


def _item(
    account: Account,
    subscription: dict[str, Any],
    found: dict[str, Any],
    raw: Any,
    period: tuple[int, int],
) -> dict[str, Any]:
    metered = found["recurring"]["usage_type"] == "metered"
    return account.stamp(
        "si",
        {
            "object": "subscription_item",
            "price": shown(found, None),
            "quantity": None if metered else int(raw.get("quantity", 1)),
            "subscription": subscription["id"],
            "metadata": {},
            "current_period_start": period[0],
            "current_period_end": period[1],
        },
        subscription["created"],
    )


def _open_spans(
    account: Account, subscription: dict[str, Any], period: tuple[int, int], backdated: bool
) -> None:
    """The current period's spans; in classic mode a backdated subscription's first span
    reaches back to its start (the first renewal invoice bills the backdated usage)."""
    classic = subscription["billing_mode"]["type"] == "classic"
    start = subscription["start_date"] if backdated and classic else period[0]
    open_spans(account, subscription, start, period[1])


def open_spans(account: Account, subscription: Mapping[str, Any], start: int, end: int) -> None:
    account.spans.extend(metered_spans(subscription, start, end))


# Reading and canceling.


def subscription(account: Account, subscription_id: str) -> dict[str, Any]:
    if subscription_id not in account.subscriptions:
        raise no_such("subscription", subscription_id)
    return account.subscriptions[subscription_id]


def list_subscriptions(account: Account, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Newest first; by `customer`, `price`, `test_clock` and `status` (default: all but
    canceled; `all`: every one)."""
    status = query.get("status")
    found = [
        s
        for s in account.subscriptions.values()
        if (status == "all" or (s["status"] == status if status else s["status"] != "canceled"))
        and ("customer" not in query or s["customer"] == query["customer"])
        and ("test_clock" not in query or s["test_clock"] == query["test_clock"])
        and (
            "price" not in query
            or any(i["price"]["id"] == query["price"] for i in s["items"]["data"])
        )
    ]
    return newest_first(found, lambda s: s["created"])


def cancel(account: Account, subscription_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """`DELETE /v1/subscriptions/{id}`: canceled now; with `invoice_now=true` a final invoice
    bills the usage of the running period so far, else that usage is never invoiced."""
    found = subscription(account, subscription_id)
    if found["status"] == "canceled":
        raise StripeFault(
            400, f"No such subscription: '{subscription_id}' is already canceled.", param="id"
        )
    now = account.time_of(found["customer"])
    running = [s for s in account.spans if s.subscription == subscription_id and s.invoice is None]
    for span in running:
        span.end = max(span.start, now)
    if form.get("invoice_now") == "true":
        started = found["items"]["data"][0]["current_period_start"]
        invoices.cycle_invoice(account, found, (started, now), running, next_period=None)
    else:
        for span in running:
            span.closed = True
    found.update(status="canceled", canceled_at=now, ended_at=now)
    account.events.emit("customer.subscription.deleted", found, now)
    return found


def delete_customer(account: Account, customer_id: str) -> dict[str, Any]:
    """Deleting a customer cancels its subscriptions at once."""
    customer = account.customer(customer_id)
    for found in list(account.subscriptions.values()):
        if found["customer"] == customer_id and found["status"] != "canceled":
            cancel(account, found["id"], {})
    customer["deleted"] = True
    account.events.emit("customer.deleted", customer, account.time_of(customer_id))
    return {"id": customer_id, "object": "customer", "deleted": True}


def _integer(form: Mapping[str, Any], param: str) -> int:
    try:
        return int(str(form[param]))
    except ValueError:
        raise StripeFault(400, f"Invalid integer: {form[param]}", param=param) from None
