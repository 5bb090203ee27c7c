"""The usage event and its codec: the one JSON object per queue record that the meter writes
and billing, reconciliation and `edge-node queue tail` read back.

On disk an event is its eight fields as one compact JSON object (`orjson.dumps`), in the
dataclass's declaration order, nothing else; `encode_event` writes it from the fields alone.
Every queue ever written holds exactly that, so the field names are the format: renaming one
would leave existing queues unreadable.

Two readings. `UsageEvent.decode` is strict: the payload must be one whole event, every field
present and of its type. `read_billable` is what billing reads from a queue it must never
stop on: the three fields a meter event is summed from, or why the record is not a usage
event, returned rather than raised, so a reader walking a queue bills that record as nothing
(or counts it unreadable) and goes on.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from edge_node.errors import NotAUsageEvent


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One billable request served: who, what, how many units, when, and which request."""

    event_id: str
    tenant_id: str
    node_id: str
    operation: str
    status: int
    units: int
    timestamp_ms: int
    request_id: str

    def encode(self) -> bytes:
        return encode_event(
            event_id=self.event_id,
            tenant_id=self.tenant_id,
            node_id=self.node_id,
            operation=self.operation,
            status=self.status,
            units=self.units,
            timestamp_ms=self.timestamp_ms,
            request_id=self.request_id,
        )

    @classmethod
    def decode(cls, payload: bytes) -> UsageEvent:
        """The event `payload` holds; NotAUsageEvent when it holds anything else."""
        try:
            event = cls(**orjson.loads(payload))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise NotAUsageEvent(str(exc)) from None
        wrong = [name for name, kind in _FIELD_TYPES if type(getattr(event, name)) is not kind]
        if wrong:
            raise NotAUsageEvent(f"{', '.join(wrong)} of the wrong type")
        return event


def encode_event(
    *,
    event_id: str,
    tenant_id: str,
    node_id: str,
    operation: str,
    status: int,
    units: int,
    timestamp_ms: int,
    request_id: str,
) -> bytes:
    """The bytes of one usage event, without making a UsageEvent first (the meter's way: a
    frozen dataclass costs each request more than its encoding)."""
    return orjson.dumps(
        {
            "event_id": event_id,
            "tenant_id": tenant_id,
            "node_id": node_id,
            "operation": operation,
            "status": status,
            "units": units,
            "timestamp_ms": timestamp_ms,
            "request_id": request_id,
        }
    )


# The operation of a usage event whose `operation` field is missing or not a string: billed
# all the same (billing sums units), shown apart where usage is broken down by operation.
UNKNOWN_OPERATION = "unknown"
_FIELD_TYPES = tuple(typing.get_type_hints(UsageEvent).items())  # each field's declared type


class BillableUsage(NamedTuple):
    """What billing reads of a usage event: whose usage, how many units, served when.

    A NamedTuple rather than a frozen dataclass: billing makes one per queue record it plans,
    and a frozen dataclass takes about twice as long to build.
    """

    tenant_id: str
    units: int
    timestamp_ms: int
    operation: str = UNKNOWN_OPERATION  # what it was served for; never decides billing


def read_billable(payload: bytes) -> BillableUsage | NotAUsageEvent:
    """The billable part of the usage event `payload` holds, or why it is not one.

    Only the three fields billing sums are checked, so the rule is the one billing has always
    applied: reconciliation counts as unreadable exactly what billing bills as nothing. The
    operation is read beside them, for breakdowns by operation, and never makes a record
    unbillable. The reasons are the messages the planner has always logged.
    """
    try:
        event = orjson.loads(payload)
        tenant_id, units, timestamp_ms = event["tenant_id"], event["units"], event["timestamp_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return NotAUsageEvent(str(exc))
    if not (isinstance(tenant_id, str) and type(units) is int and type(timestamp_ms) is int):
        return NotAUsageEvent("tenant_id, units or timestamp_ms has the wrong type")
    operation = event.get("operation")
    if not isinstance(operation, str):
        operation = UNKNOWN_OPERATION
    return BillableUsage(tenant_id, units, timestamp_ms, operation)
