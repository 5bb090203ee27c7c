"""Billing under SIGKILL: every request a client saw succeed is billed exactly once.

The crash rounds run the real daemon as a subprocess (tests/crash_harness.py); the checker
they rely on is tested on fabricated ledgers, so a check that could never fire is caught.
`python -m bench.crash --rounds 1000` runs the same rounds for longer (docs/durability.md).
"""

from __future__ import annotations

import random
from pathlib import Path

from edge_node.queue import open_queue
from edge_node.usage.event import UsageEvent
from tests.crash_harness import (
    CrashRun,
    Kind,
    Ledger,
    Observed,
    Outcome,
    QueuedEvent,
    QueueReader,
    StoredRating,
    describe,
    find_violations,
)

ROUNDS = 5
TENANT = "0b6f4f4e-8d1c-4f3e-9a59-3c1f0e1d2a77"


class TestBillingSurvivesSigkill:
    async def test_every_acknowledged_request_is_billed_once_across_kills(
        self, tmp_path: Path
    ) -> None:
        """After repeated SIGKILLs mid-load, each acknowledged request has exactly one event."""
        seed = random.randrange(2**32)
        run = await CrashRun.create(tmp_path / "var", seed=seed, log_path=tmp_path / "daemon.log")
        try:
            reports = [await run.round() for _ in range(ROUNDS)]
        finally:
            run.close()
        story = f"seed {seed}:\n" + "\n".join(describe(report) for report in reports)
        assert [report.violations for report in reports] == [[]] * ROUNDS, story
        assert all(report.killed for report in reports), story
        # Without acknowledged requests, or without requests cut off by the kill, the rounds
        # would prove nothing about crashes under load.
        assert sum(report.acknowledged for report in reports) >= 100, story
        assert sum(report.unanswered for report in reports) >= ROUNDS, story


def acknowledged(request_id: str, kind: Kind = "create", status: int = 201) -> Outcome:
    """A request the client saw succeed; writes put score 4 on their own key."""
    if kind == "score":
        return Outcome(request_id, kind, ("", "item-1"), None, status)
    return Outcome(request_id, kind, (f"user-{request_id}", "item-1"), 4, status, 4)


def event(request_id: str, operation: str = "rating.create", status: int = 201) -> UsageEvent:
    return UsageEvent(f"ev-{request_id}", TENANT, "node-a", operation, status, 1, 0, request_id)


def queued(*events: UsageEvent) -> list[QueuedEvent]:
    return [QueuedEvent(seq, e) for seq, e in enumerate(events, start=1)]


def ledger_of(*outcomes: Outcome) -> Ledger:
    ledger = Ledger()
    for outcome in outcomes:
        ledger.add(outcome)
    return ledger


def stored(*outcomes: Outcome) -> dict[tuple[str, str], StoredRating]:
    return {o.key: StoredRating(o.score or 0, False) for o in outcomes if o.kind != "score"}


class TestCrashChecker:
    def test_a_consistent_ledger_has_no_violations(self) -> None:
        """Each acknowledged request billed once and each write stored: nothing is reported."""
        a, b = acknowledged("a"), acknowledged("b", "score", 200)
        observed = Observed(queued(event("a"), event("b", "score.read", 200)), stored(a))
        assert find_violations(ledger_of(a, b), observed, TENANT) == []

    def test_reports_a_lost_and_a_doubled_event(self) -> None:
        """An acknowledged request with no event is lost; one with two events is doubled."""
        a, b = acknowledged("a"), acknowledged("b")
        observed = Observed(queued(event("b"), event("b")), stored(a, b))
        found = {(v.kind, v.subject) for v in find_violations(ledger_of(a, b), observed, TENANT)}
        assert found == {("lost", "a"), ("doubled", "b")}

    def test_reports_an_event_for_a_refused_request(self) -> None:
        """A request answered 400 must not be billed."""
        refused = Outcome("r", "refused", ("user-r", "item-1"), 0, 400)
        observed = Observed(queued(event("r", "rating.create", 400)), {})
        found = {(v.kind, v.subject) for v in find_violations(ledger_of(refused), observed, TENANT)}
        assert found == {("billed-refusal", "r")}

    def test_reports_an_acknowledged_write_missing_from_the_database(self) -> None:
        """An acknowledged rating that is absent, or holds another score, is lost."""
        a, b = acknowledged("a"), acknowledged("b")
        ratings = {b.key: StoredRating(1, False)}
        observed = Observed(queued(event("a"), event("b")), ratings)
        found = {(v.kind, v.subject) for v in find_violations(ledger_of(a, b), observed, TENANT)}
        assert found == {("rating-lost", repr(a.key)), ("rating-lost", repr(b.key))}

    def test_a_later_unanswered_write_may_replace_an_acknowledged_one(self) -> None:
        """A write cut off by the kill may or may not have landed; either score is accepted."""
        first = acknowledged("a")
        cut_off = Outcome("c", "update", first.key, 2)
        ledger, events = ledger_of(first, cut_off), queued(event("a"))
        for score in (4, 2):
            observed = Observed(events, {first.key: StoredRating(score, False)})
            assert find_violations(ledger, observed, TENANT) == []
        observed = Observed(events, {first.key: StoredRating(3, False)})
        assert [v.kind for v in find_violations(ledger, observed, TENANT)] == ["rating-lost"]

    def test_reports_a_gap_in_the_queue(self) -> None:
        """Records lost from the middle of the queue are reported even if no ack needed them."""
        gapped = [QueuedEvent(1, event("x")), QueuedEvent(3, event("y"))]
        ledger = ledger_of(
            Outcome("x", "create", ("u", "i"), 1), Outcome("y", "create", ("v", "i"), 1)
        )
        found = [v.kind for v in find_violations(ledger, Observed(gapped, {}), TENANT)]
        assert found == ["queue-gap"]


async def append_events(directory: Path, *request_ids: str) -> None:
    async with await open_queue(directory) as queue:
        for request_id in request_ids:
            await queue.append(event(request_id).encode())


def damage_middle_of_only_segment(directory: Path) -> None:
    """Flip a byte halfway through the segment: inside the second of three equal records."""
    (segment,) = directory.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))


class TestQueueReader:
    async def test_reads_only_what_was_appended_since_the_last_read(self, tmp_path: Path) -> None:
        """Records appended between reads are added to those read before, without starting over."""
        reader = QueueReader(tmp_path)
        await append_events(tmp_path, "a", "b")
        assert [q.event.request_id for q in reader.read() if q.event] == ["a", "b"]
        await append_events(tmp_path, "c")
        assert [(q.seq, q.event.request_id) for q in reader.read() if q.event] == [
            (1, "a"),
            (2, "b"),
            (3, "c"),
        ]
        assert reader.rereads == 0

    async def test_a_record_damaged_after_it_was_read_shows_as_a_gap(self, tmp_path: Path) -> None:
        """Bytes read in an earlier round that change later make the reader start over."""
        reader = QueueReader(tmp_path)
        await append_events(tmp_path, "a", "b", "c")
        assert len(reader.read()) == 3
        damage_middle_of_only_segment(tmp_path)
        observed = Observed(reader.read(), {})
        ledger = ledger_of(*(Outcome(r, "create", (r, "i"), 1) for r in "abc"))
        assert reader.rereads == 1
        assert [v.kind for v in find_violations(ledger, observed, TENANT)] == ["queue-gap"]
