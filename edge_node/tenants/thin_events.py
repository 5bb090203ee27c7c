"""Stripe's thin events at the webhook endpoint: recorded once here, fetched and applied later.

An event destination sends thin events (`object: "v2.core.event"`): the notification names
the event (`id`, `type`, an ISO `created`, maybe a `related_object`) without its `data`,
which must be fetched (`GET /v2/core/events/{id}`). The request path never calls Stripe, so
the endpoint verifies the signature as for any event, records the notification in
`stripe_thin_events` (each id once: a redelivery is a duplicate and changes nothing) and
answers 200; the sync worker fetches the pending ones and applies them
(sync/billing/meter_errors.py), then settles them here.

    received --type the node applies--> pending --fetched and applied--> applied
       +------any other type------------> ignored

The types applied are Stripe's asynchronous meter error reports: usage Stripe accepted and
then found invalid (`v1.billing.meter.error_report_triggered`,
`v1.billing.meter.no_meter_found`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edge_node import sqlite
from edge_node.errors import BadRequest

THIN_OBJECT = "v2.core.event"
METER_ERROR_TYPES = frozenset(
    {"v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"}
)
MAX_ID_LENGTH = 255
ThinState = Literal["pending", "applied", "ignored"]


@dataclass(frozen=True, slots=True)
class ThinEvent:
    """A thin event notification: which event, of what type, created when (Unix seconds)."""

    event_id: str
    type: str
    created: int


def is_thin(document: Any) -> bool:
    """Whether a verified body is a thin event notification rather than a snapshot event."""
    return isinstance(document, dict) and document.get("object") == THIN_OBJECT


def parse_thin_event(document: dict[str, Any]) -> ThinEvent:
    """The notification's parts; 400 `invalid-event` when it is not one."""
    event_id, event_type = document.get("id"), document.get("type")
    for name, value in (("id", event_id), ("type", event_type)):
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
            raise _invalid(f"{name} must be a string of 1 to {MAX_ID_LENGTH} characters")
    created = document.get("created")
    try:
        when = datetime.fromisoformat(str(created))
    except ValueError:
        raise _invalid("created must be an ISO 8601 time (a thin event's)") from None
    if when.tzinfo is None:
        raise _invalid("created must name its time zone")
    return ThinEvent(str(event_id), str(event_type), int(when.timestamp()))


def _invalid(detail: str) -> BadRequest:
    return BadRequest(f"not a Stripe thin event: {detail}", slug="invalid-event")


class ThinEventStore:
    """The `stripe_thin_events` table of node.sqlite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def record(self, event: ThinEvent, now_us: int) -> tuple[ThinState, bool]:
        """Record a notification once: (its state, whether it had been received before)."""
        state: ThinState = "pending" if event.type in METER_ERROR_TYPES else "ignored"
        with sqlite.transaction(self.conn):
            seen = self.conn.execute(
                "SELECT state FROM stripe_thin_events WHERE event_id = ?", (event.event_id,)
            ).fetchone()
            if seen is not None:
                return seen[0], True
            self.conn.execute(
                "INSERT INTO stripe_thin_events (event_id, type, created, received_at, state)"
                " VALUES (?, ?, ?, ?, ?)",
                (event.event_id, event.type, event.created, now_us, state),
            )
        return state, False

    def pending(self, limit: int = 100) -> list[ThinEvent]:
        """Notifications still to be fetched and applied, oldest first."""
        rows = self.conn.execute(
            "SELECT event_id, type, created FROM stripe_thin_events WHERE state = 'pending'"
            " ORDER BY created, event_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [ThinEvent(*row) for row in rows]

    def settle(self, event_id: str, outcome: str) -> None:
        """The event was fetched and applied; `outcome` says what it did."""
        with sqlite.transaction(self.conn):
            self.conn.execute(
                "UPDATE stripe_thin_events SET state = 'applied', outcome = ?"
                " WHERE event_id = ? AND state = 'pending'",
                (outcome, event_id),
            )

    def state(self, event_id: str) -> tuple[ThinState, str | None] | None:
        row = self.conn.execute(
            "SELECT state, outcome FROM stripe_thin_events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None
