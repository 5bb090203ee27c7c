"""Planning: queue records become one batch per tenant and complete window, deterministically."""

from __future__ import annotations

import logging

import orjson
import pytest

from edge_node.queue import Record
from sync.billing.plan import UsagePlanner, batch_identifier

WINDOW = 60
T0 = 1_700_000_040  # a window start (a multiple of 60)


def usage(seq: int, tenant: str, at: float, units: int = 1) -> Record:
    payload = {
        "event_id": f"e{seq}",
        "tenant_id": tenant,
        "node_id": "n",
        "operation": "score.read",
        "status": 200,
        "units": units,
        "timestamp_ms": int(at * 1000),
        "request_id": "r",
    }
    return Record(seq, int(at * 1000), orjson.dumps(payload))


def planner(**overrides: object) -> UsagePlanner:
    settings: dict[str, object] = {
        "node_id": "edge-1",
        "queue": "worker-0",
        "event_name": "requests",
        "window_seconds": WINDOW,
        "planned_through": 0,
    }
    settings.update(overrides)
    return UsagePlanner(**settings)  # type: ignore[arg-type]


class TestIdentifiers:
    def test_the_same_batch_always_gets_the_same_identifier(self) -> None:
        """The identifier depends only on node, queue, tenant, window and range, and each of
        them changes it; it fits Stripe's identifier and Idempotency-Key limits."""
        base = {"window_start": T0, "first_seq": 1, "last_seq": 9}
        one = batch_identifier("edge-1", "worker-0", "t", **base)
        assert one == batch_identifier("edge-1", "worker-0", "t", **base)
        others = {
            batch_identifier("edge-2", "worker-0", "t", **base),
            batch_identifier("edge-1", "worker-1", "t", **base),
            batch_identifier("edge-1", "worker-0", "u", **base),
            batch_identifier("edge-1", "worker-0", "t", **{**base, "window_start": T0 + 60}),
            batch_identifier("edge-1", "worker-0", "t", **{**base, "first_seq": 2}),
            batch_identifier("edge-1", "worker-0", "t", **{**base, "last_seq": 10}),
        }
        assert one not in others
        assert len(others) == 6
        assert len(one) <= 100


class TestWindows:
    def test_each_tenant_window_becomes_one_batch_with_its_sum(self) -> None:
        """Units and events are summed per tenant and window; the range is every record."""
        plan = planner()
        plan.extend(
            [
                usage(1, "a", T0 + 1, units=2),
                usage(2, "b", T0 + 2),
                usage(3, "a", T0 + 59),
                usage(4, "a", T0 + 61),
            ]
        )
        planned = plan.take(T0 + 200, read_everything=True)
        assert planned is not None
        assert (planned.first_seq, planned.last_seq) == (1, 4)
        summary = [(b.tenant_id, b.window_start, b.value, b.events) for b in planned.batches]
        assert summary == [("a", T0, 3, 2), ("a", T0 + 60, 1, 1), ("b", T0, 1, 1)]
        assert plan.planned_through == 4

    def test_the_newest_window_waits_until_it_is_complete(self) -> None:
        """Records of the newest window are held while it may still grow: until a later
        window shows up in the queue, or everything is read and the clock is past its end."""
        plan = planner()
        plan.extend([usage(1, "a", T0 + 1), usage(2, "a", T0 + 61)])
        first = plan.take(T0 + 62, read_everything=True)
        assert first is not None
        assert (first.first_seq, first.last_seq) == (1, 1)
        assert plan.take(T0 + 62, read_everything=True) is None
        plan.extend([usage(3, "a", T0 + 62)])
        assert plan.take(T0 + 200, read_everything=False) is None  # more may be unread
        last = plan.take(T0 + 200, read_everything=True)
        assert last is not None
        assert last.batches[0].value == 2
        assert plan.pending == 0

    def test_the_newest_window_is_complete_once_the_clock_stepped_back_before_it(
        self,
    ) -> None:
        """A clock stepped back before the newest window's start cannot serve a record of it
        until it gets there again: the window is planned now, not held for the step's length,
        and a record served in it later becomes a batch of its own."""
        plan = planner()
        plan.extend([usage(1, "a", T0 + 90), usage(2, "a", T0 + 95)])
        assert plan.take(T0 + 60, read_everything=True) is None  # inside the window: may grow
        assert plan.take(T0 + 59, read_everything=False) is None  # more may be unread
        stepped_back = plan.take(T0 + 59, read_everything=True)
        assert stepped_back is not None
        assert (stepped_back.last_seq, stepped_back.batches[0].value) == (2, 2)
        plan.extend([usage(3, "a", T0 + 61)])
        later = plan.take(T0 + 200, read_everything=True)
        assert later is not None
        assert [(b.window_start, b.value) for b in later.batches] == [(T0 + 60, 1)]
        assert later.batches[0].identifier != stepped_back.batches[0].identifier

    def test_a_window_larger_than_the_pending_bound_is_cut(self) -> None:
        """A window is not held without bound: past max_pending records it is planned as is."""
        plan = planner(max_pending=3)
        plan.extend([usage(n, "a", T0 + 1) for n in range(1, 4)])
        planned = plan.take(T0 + 2, read_everything=False)
        assert planned is not None
        assert planned.batches[0].value == 3

    def test_a_record_that_is_not_a_usage_event_bills_nothing_and_keeps_its_place(
        self,
    ) -> None:
        """A record that cannot be read as a usage event is reported and not billed, and the
        range stays contiguous around it."""
        plan = planner()
        plan.extend([usage(1, "a", T0 + 1), Record(2, (T0 + 2) * 1000, b"not json")])
        plan.extend([usage(3, "a", T0 + 3)])
        planned = plan.take(T0 + 200, read_everything=True)
        assert planned is not None
        assert planned.unreadable == (2,)
        assert (planned.first_seq, planned.last_seq, planned.batches[0].value) == (1, 3, 2)

    def test_a_record_that_is_not_a_usage_event_is_logged_with_why(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The planner logs one ERROR line naming the queue, the record and the reason."""
        payload = orjson.dumps({"units": 1, "timestamp_ms": (T0 + 2) * 1000})
        with caplog.at_level(logging.ERROR, logger="sync.billing.plan"):
            planner().extend([Record(1, (T0 + 2) * 1000, payload)])
        assert caplog.messages == [
            "queue worker-0 record 1 is not a usage event and is not billed: 'tenant_id'"
        ]

    def test_records_must_come_in_order(self) -> None:
        """A gap in what is handed to the planner is refused rather than planned around."""
        plan = planner(planned_through=5)
        with pytest.raises(ValueError, match="expected record 6"):
            plan.extend([usage(7, "a", T0)])
