"""Billing meters and meter events in the stand-in, with the rules Stripe documents.

`POST /v1/billing/meter_events` checks at once what Stripe checks at once: `event_name` and
`payload` present, the customer key (`payload[stripe_customer_id]`) present, a numeric
value, `timestamp` within the past 35 days and at most 5 minutes ahead of the time that
drives the customer (its test clock, else the stand-in's clock), and an `identifier` not
recorded in the last 24 hours of the stand-in's clock (Stripe's answer: 400, "An event
already exists with identifier <id>.", no `code`, `stripe-should-retry: false`). The rest it
checks later, as Stripe processes meter events asynchronously: an event for a customer that
does not exist, for an event name no active meter has, or whose identifier a test asked to
drop (`drop_identifiers`) is answered 200, never counted, and reported by the next thin
event `v1.billing.meter.error_report_triggered` (or `v1.billing.meter.no_meter_found`) to
the event destinations (sync/stripe/standin/events.py).

A customer with no subscription on the meter's price is not an error for Stripe (meters do
not need subscriptions): its usage is counted by the meter (event summaries) and invoiced
by no one, unless a subscription backdated over it is created later.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sync.stripe.standin.faults import StripeFault, missing, no_such
from sync.stripe.standin.ledger import Account

DAY = 86_400
DEDUP_WINDOW_SECONDS = DAY
PAST_LIMIT_SECONDS = 35 * DAY
FUTURE_LIMIT_SECONDS = 300
FORMULAS = ("sum", "count", "last")


@dataclass
class UsageRecord:
    """A meter event the stand-in accepted; `dropped` is the error code when asynchronous
    validation refused it (then it counts nowhere)."""

    identifier: str
    event_name: str
    customer: str
    value: Decimal
    timestamp: int
    received: float  # the stand-in's clock
    meter: str | None
    payload: dict[str, str]
    dropped: str | None = None
    error_message: str = ""
    reported: bool = False  # its error went into a thin event
    invoice: str | None = None  # the finalized invoice that counted it

    def counts(self) -> bool:
        return self.dropped is None


# Meters.


def create_meter(account: Account, form: Mapping[str, Any]) -> dict[str, Any]:
    for name in ("display_name", "event_name", "default_aggregation"):
        if not form.get(name):
            raise missing(name)
    formula = form["default_aggregation"].get("formula")
    if formula not in FORMULAS:
        raise StripeFault(
            400, "Invalid default_aggregation[formula].", param="default_aggregation[formula]"
        )
    event_name = form["event_name"]
    if any(m["event_name"] == event_name for m in account.meters.values()):
        raise StripeFault(
            400,
            f"A meter with event_name {event_name} already exists.",
            code="resource_already_exists",
            param="event_name",
        )
    meter = account.stamp(
        "mtr",
        {
            "object": "billing.meter",
            "display_name": form["display_name"],
            "event_name": event_name,
            "event_time_window": None,
            "status": "active",
            "status_transitions": {"deactivated_at": None},
            "default_aggregation": {"formula": formula},
            "customer_mapping": form.get("customer_mapping")
            or {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": form.get("value_settings") or {"event_payload_key": "value"},
        },
    )
    meter["updated"] = meter["created"]
    account.meters[meter["id"]] = meter
    return meter


def meter(account: Account, meter_id: str) -> dict[str, Any]:
    if meter_id not in account.meters:
        raise no_such("billing.meter", meter_id)
    return account.meters[meter_id]


def set_meter_status(account: Account, meter_id: str, active: bool) -> dict[str, Any]:
    found = meter(account, meter_id)
    found["status"] = "active" if active else "inactive"
    found["status_transitions"]["deactivated_at"] = None if active else int(account.now())
    found["updated"] = int(account.now())
    return found


def list_meters(account: Account, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    meters = list(account.meters.values())
    if "status" in query:
        meters = [m for m in meters if m["status"] == query["status"]]
    return meters


def active_meter(account: Account, event_name: str) -> dict[str, Any] | None:
    return next(
        (
            m
            for m in account.meters.values()
            if m["event_name"] == event_name and m["status"] == "active"
        ),
        None,
    )


# Meter events.


def meter_event_subject(form: Mapping[str, Any]) -> tuple[str, str, Decimal]:
    """(event name, customer, value) of a meter event request, or the fault it deserves."""
    if not form.get("event_name"):
        raise missing("event_name")
    if len(str(form["event_name"])) > 100:
        raise StripeFault(
            400, "Invalid event_name: must be at most 100 characters", param="event_name"
        )
    payload = form.get("payload")
    if not isinstance(payload, dict):
        raise missing("payload")
    customer_id = payload.get("stripe_customer_id")
    if not customer_id:
        raise missing("payload[stripe_customer_id]")
    try:
        value = Decimal(str(payload.get("value", "")))
    except InvalidOperation:
        raise StripeFault(400, "payload[value] must be a number.", param="payload[value]") from None
    if not value.is_finite():
        raise StripeFault(400, "payload[value] must be a number.", param="payload[value]")
    return str(form["event_name"]), str(customer_id), value


def record_meter_event(
    account: Account, form: Mapping[str, Any], dropped: Mapping[str, str]
) -> dict[str, Any]:
    """Check what Stripe checks at once, record the event, and decide what asynchronous
    validation will make of it (`dropped`: identifiers a test wants refused, with a code)."""
    event_name, customer_id, value = meter_event_subject(form)
    now = account.now()
    identifier = str(form.get("identifier") or f"standin_{secrets.token_hex(12)}")
    if len(identifier) > 100:
        raise StripeFault(
            400, "Invalid identifier: must be at most 100 characters", param="identifier"
        )
    timestamp = _timestamp(account, form, customer_id)
    recorded_at = account.identifiers.get(identifier)
    if recorded_at is not None and now - recorded_at < DEDUP_WINDOW_SECONDS:
        raise StripeFault(
            400,
            f"An event already exists with identifier {identifier}.",
            headers={"Stripe-Should-Retry": "false"},
        )
    account.identifiers[identifier] = now
    found = active_meter(account, event_name)
    record = UsageRecord(
        identifier,
        event_name,
        customer_id,
        value,
        timestamp,
        now,
        found["id"] if found else None,
        {str(k): str(v) for k, v in form["payload"].items()},
    )
    _validate_later(account, record, dropped)
    account.meter_events.append(record)
    return {
        "object": "billing.meter_event",
        "created": int(now),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": record.payload,
        "timestamp": timestamp,
    }


def _timestamp(account: Account, form: Mapping[str, Any], customer_id: str) -> int:
    now = account.time_of(customer_id)
    try:
        timestamp = int(str(form.get("timestamp", now)))
    except ValueError:
        raise StripeFault(400, f"Invalid integer: {form['timestamp']}", param="timestamp") from None
    if timestamp < now - PAST_LIMIT_SECONDS:
        raise StripeFault(
            400,
            "The event timestamp cannot be more than 35 days in past. Expected a timestamp "
            f"greater than or equal to {now - PAST_LIMIT_SECONDS}.",
            param="timestamp",
        )
    if timestamp > now + FUTURE_LIMIT_SECONDS:
        # Stripe's wording for this case is not published; this mirrors the past one.
        raise StripeFault(
            400,
            "The event timestamp cannot be more than 5 minutes in the future. Expected a "
            f"timestamp less than or equal to {now + FUTURE_LIMIT_SECONDS}.",
            param="timestamp",
        )
    return timestamp


def _validate_later(account: Account, record: UsageRecord, dropped: Mapping[str, str]) -> None:
    """What Stripe's asynchronous validation will say of this event, in Stripe's codes."""
    customer = account.customers.get(record.customer)
    archived = next(
        (m for m in account.meters.values() if m["event_name"] == record.event_name), None
    )
    if record.meter is None and archived is not None:
        record.meter = archived["id"]
        record.dropped = "archived_meter"
        record.error_message = f"Meter {archived['id']} is inactive."
    elif record.meter is None:
        record.dropped = "no_meter"
        record.error_message = f"No meter was found matching event_name {record.event_name}."
    elif customer is None or customer["deleted"]:
        record.dropped = "meter_event_customer_not_found"
        record.error_message = f"Customer {record.customer} not found."
    elif record.identifier in dropped:
        record.dropped = dropped[record.identifier]
        record.error_message = f"Meter event {record.identifier} was refused ({record.dropped})."


def aggregate(records: Iterable[UsageRecord], formula: str) -> Decimal:
    """A meter's formula over counted events: sum of values, number of events, or the value
    of the last one (by timestamp, then arrival)."""
    counted = [r for r in records if r.counts()]
    if formula == "count":
        return Decimal(len(counted))
    if formula == "last":
        latest = max(counted, key=lambda r: (r.timestamp, r.received), default=None)
        return latest.value if latest else Decimal(0)
    return sum((r.value for r in counted), Decimal(0))


def usage_of(
    account: Account, customer: str, meter_id: str, start: int, end: int
) -> list[UsageRecord]:
    """Counted events of `customer` on `meter_id` whose timestamp lies in [start, end)."""
    return [
        r
        for r in account.meter_events
        if r.counts()
        and r.customer == customer
        and r.meter == meter_id
        and start <= r.timestamp < end
    ]
