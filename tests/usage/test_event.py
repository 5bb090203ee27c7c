"""The usage-event codec: the bytes queues hold, the strict decoding, billing's tolerant one."""

from __future__ import annotations

import orjson
import pytest

from edge_node.errors import NotAUsageEvent
from edge_node.usage.event import (
    UNKNOWN_OPERATION,
    BillableUsage,
    UsageEvent,
    encode_event,
    read_billable,
)

EVENT = UsageEvent(
    "01900000-0000-7000-8000-000000000001",
    "tenant-a",
    "node-1",
    "rating.create",
    201,
    3,
    1_700_000_000_123,
    "req-1",
)
# The bytes every queue written so far holds for EVENT: field names, order and spacing.
ON_DISK = (
    b'{"event_id":"01900000-0000-7000-8000-000000000001","tenant_id":"tenant-a",'
    b'"node_id":"node-1","operation":"rating.create","status":201,"units":3,'
    b'"timestamp_ms":1700000000123,"request_id":"req-1"}'
)


class TestEncoding:
    def test_an_event_encodes_to_the_bytes_queues_already_hold(self) -> None:
        """encode writes one compact JSON object of the eight fields in declaration order."""
        assert EVENT.encode() == ON_DISK

    def test_the_fields_alone_encode_to_the_same_bytes(self) -> None:
        """encode_event, which the meter calls without making a UsageEvent, writes the same."""
        assert encode_event(**{name: getattr(EVENT, name) for name in EVENT.__slots__}) == ON_DISK

    def test_what_is_encoded_decodes_to_the_same_event(self) -> None:
        """decode(encode(event)) is the event, and the bytes on disk decode to it."""
        assert UsageEvent.decode(EVENT.encode()) == EVENT
        assert UsageEvent.decode(ON_DISK) == EVENT


class TestStrictDecoding:
    @pytest.mark.parametrize(
        "payload",
        [
            b"not json",
            b"[1, 2]",
            ON_DISK.replace(b',"request_id":"req-1"', b""),
            ON_DISK.replace(b"}", b',"comment":"x"}'),
            ON_DISK.replace(b'"units":3', b'"units":"3"'),
            ON_DISK.replace(b'"status":201', b'"status":true'),
        ],
        ids=["not-json", "not-an-object", "missing", "unknown", "units-text", "status-bool"],
    )
    def test_anything_but_one_whole_event_is_refused(self, payload: bytes) -> None:
        """Not JSON, not an object, a field missing or unknown, or of the wrong type: each
        raises NotAUsageEvent instead of giving an event with a hole or a wrong field."""
        with pytest.raises(NotAUsageEvent):
            UsageEvent.decode(payload)

    def test_the_reason_names_the_field_of_the_wrong_type(self) -> None:
        """A field of the wrong type is named in the message."""
        with pytest.raises(NotAUsageEvent, match="units of the wrong type"):
            UsageEvent.decode(ON_DISK.replace(b'"units":3', b'"units":3.0'))


class TestBillableReading:
    def test_an_event_gives_whose_usage_how_many_units_and_when(self) -> None:
        """The billable part of an event: its tenant, units, time and operation."""
        assert read_billable(ON_DISK) == BillableUsage(
            "tenant-a", 3, 1_700_000_000_123, UsageEvent.decode(ON_DISK).operation
        )

    def test_only_the_billed_fields_are_required(self) -> None:
        """A record with the three fields billing sums is billed, whatever else it holds; its
        operation, missing or not a string, is the unknown one."""
        payload = b'{"tenant_id":"t","units":2,"timestamp_ms":5,"extra":null,"operation":7}'
        assert read_billable(payload) == BillableUsage("t", 2, 5, UNKNOWN_OPERATION)

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            (b"[1, 2]", "list indices must be integers or slices, not str"),
            (ON_DISK.replace(b'"tenant_id":"tenant-a",', b""), "'tenant_id'"),
            (
                ON_DISK.replace(b'"units":3', b'"units":"3"'),
                "tenant_id, units or timestamp_ms has the wrong type",
            ),
            (
                ON_DISK.replace(b'"units":3', b'"units":true'),
                "tenant_id, units or timestamp_ms has the wrong type",
            ),
        ],
        ids=["not-an-object", "no-tenant", "units-text", "units-bool"],
    )
    def test_a_record_that_is_not_an_event_is_returned_with_its_reason(
        self, payload: bytes, reason: str
    ) -> None:
        """A record that is not a usage event is not raised on: the reader gets a
        NotAUsageEvent back whose message says why, as the planner logs it."""
        result = read_billable(payload)
        assert isinstance(result, NotAUsageEvent)
        assert str(result) == reason

    def test_a_record_that_is_not_json_is_returned_with_the_parser_message(self) -> None:
        """Text that is not JSON comes back as NotAUsageEvent carrying the parser's message."""
        with pytest.raises(orjson.JSONDecodeError) as parsed:
            orjson.loads(b"not json")
        result = read_billable(b"not json")
        assert isinstance(result, NotAUsageEvent)
        assert str(result) == str(parsed.value)
