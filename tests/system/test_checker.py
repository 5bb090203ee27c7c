"""The checker itself: it flags each kind of broken guarantee, and nothing that is not one."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edge_node.rating.replication import rating_id
from sync.billing.ledger import BillingLedger
from sync.billing.plan import MeterEventBatch, PlannedRange
from tests.system.checker import check_ratings, check_replicas, compare_meter_events
from tests.system.record import Observations, WriteOp
from tests.system.snapshot import Batch, Replica, Row, read_edge

TENANT = "7d4c55a1-0000-4000-8000-000000000001"
KEY = (TENANT, "t0-u0", "item-1")


def row(score: int, comment: str | None, updated_at: int, node: str, deleted: bool = False) -> Row:
    return (rating_id(*KEY), TENANT, *KEY[1:], score, comment, 1, updated_at, node, deleted)


def central(*rows: Row) -> Replica:
    return Replica("central", rows={TENANT: list(rows)})


def upsert(score: int, comment: str, updated_at: int, node: str, acked: bool = True) -> WriteOp:
    stamp = (updated_at, node) if acked else None
    return WriteOp("upsert", KEY, node, acked, score, comment, stamp)


def ratings_violations(replica: Replica, *ops: WriteOp) -> list[str]:
    seen = Observations()
    for op in ops:
        seen.write(op)
    check_ratings(replica, seen)
    return [message for _, message in seen.violations]


class TestRatingsCheck:
    def test_the_latest_acknowledged_write_present_everywhere_passes(self) -> None:
        """A key whose row is its latest acknowledged upsert raises nothing."""
        ops = (upsert(3, "t0:1", 100, "edge-1"), upsert(5, "t0:2", 200, "edge-2"))
        assert ratings_violations(central(row(5, "t0:2", 200, "edge-2")), *ops) == []

    def test_an_acknowledged_write_replaced_by_an_older_one_is_a_lost_write(self) -> None:
        """A row older (by the conflict rule) than an acknowledged upsert is flagged."""
        ops = (upsert(3, "t0:1", 100, "edge-1"), upsert(5, "t0:2", 200, "edge-2"))
        assert "lost to" in ratings_violations(central(row(3, "t0:1", 100, "edge-1")), *ops)[0]

    def test_an_acknowledged_write_missing_everywhere_is_flagged(self) -> None:
        """No row at all for a key with an acknowledged upsert is flagged."""
        assert "is nowhere" in ratings_violations(central(), upsert(3, "t0:1", 100, "edge-1"))[0]

    def test_an_in_doubt_write_may_win_or_be_absent(self) -> None:
        """A write whose answer was lost may be the row, or not be there at all."""
        ops = (upsert(3, "t0:1", 100, "edge-1"), upsert(4, "t0:2", 0, "edge-2", acked=False))
        assert ratings_violations(central(row(4, "t0:2", 150, "edge-2")), *ops) == []
        assert ratings_violations(central(row(3, "t0:1", 100, "edge-1")), *ops) == []

    def test_a_row_nobody_wrote_is_flagged(self) -> None:
        """A row that matches no request (another tenant's data, a phantom) is flagged."""
        assert "nobody wrote" in ratings_violations(central(row(2, "t9:7", 100, "edge-3")))[0]
        ops = (upsert(3, "t0:1", 100, "edge-1"),)
        found = ratings_violations(central(row(3, "t0:other", 101, "edge-1")), *ops)
        assert any("no request wrote" in message for message in found)

    def test_an_acknowledged_delete_undone_by_an_older_write_is_flagged(self) -> None:
        """A live row stamped before an acknowledged delete was even sent is flagged."""
        delete = WriteOp("delete", KEY, "edge-2", True, not_before_us=300)
        ops = (upsert(3, "t0:1", 100, "edge-1"), delete)
        assert "undone" in ratings_violations(central(row(3, "t0:1", 100, "edge-1")), *ops)[0]
        assert ratings_violations(central(row(3, None, 301, "edge-2", deleted=True)), *ops) == []


class TestReplicaCheck:
    def test_aggregates_that_disagree_with_the_rows_are_flagged(self) -> None:
        """item_scores must be what the live rows add up to."""
        replica = central(row(4, "t0:1", 100, "edge-1"))
        replica.scores[TENANT] = [("item-1", 1, 4, 0, 0, 0, 1, 0)]
        seen = Observations()
        check_replicas([replica], seen)
        assert seen.violations == []
        replica.scores[TENANT] = [("item-1", 2, 8, 0, 0, 0, 2, 0)]
        check_replicas([replica], seen)
        assert [check for check, _ in seen.violations] == ["ratings"]


def batch(value: int, state: str = "confirmed") -> Batch:
    return Batch(TENANT, value, value, state)


def meter_event_problems(ledger: dict[str, Batch], events: list[tuple[str, str, int]]) -> list[str]:
    return compare_meter_events([Replica("edge-1", batches=ledger)], events, {"cus_1": TENANT})


class TestMeterEventComparison:
    def test_ledgers_and_the_stand_in_agreeing_identifier_by_identifier_pass(self) -> None:
        """Confirmed batches at the stand-in with their values; set aside ones absent."""
        ledger = {"en_a": batch(3), "en_b": batch(1), "en_c": batch(2, "set_aside")}
        events = [("en_a", "cus_1", 3), ("en_b", "cus_1", 1)]
        assert meter_event_problems(ledger, events) == []

    def test_a_value_the_stand_in_holds_other_than_the_ledger_is_flagged(self) -> None:
        """Totals that agree do not hide one batch sent with a value the ledger lacks."""
        ledger = {"en_a": batch(3), "en_b": batch(1)}
        found = meter_event_problems(ledger, [("en_a", "cus_1", 4), ("en_b", "cus_1", 0)])
        assert len(found) == 2
        assert all("at the stand-in as" in m for m in found)

    def test_confirmed_but_missing_set_aside_but_billed_and_unplanned_are_flagged(
        self,
    ) -> None:
        """Each way a ledger and the stand-in can part is named."""
        ledger = {"en_a": batch(3), "en_c": batch(2, "set_aside")}
        found = meter_event_problems(ledger, [("en_c", "cus_1", 2), ("en_x", "cus_1", 1)])
        assert len(found) == 3
        assert "is not at the stand-in" in found[0]
        assert "is at the stand-in with value 2" in found[1]
        assert "which no ledger planned" in found[2]

    def test_an_identifier_accepted_twice_or_planned_by_two_nodes_is_flagged(self) -> None:
        """Identifiers are unique: at the stand-in, and across the nodes' ledgers."""
        twice = meter_event_problems({"en_a": batch(1)}, [("en_a", "cus_1", 1)] * 2)
        assert any("accepted identifier en_a twice" in m for m in twice)
        edges = [Replica("edge-1", batches={"en_a": batch(1)}), Replica("edge-2")]
        edges[1].batches["en_a"] = batch(1)
        found = compare_meter_events(edges, [("en_a", "cus_1", 1)], {"cus_1": TENANT})
        assert found == ["identifier en_a planned by edge-1 and edge-2"]


class FlushingNode:
    """An edge node's files, whose usage flush plans, confirms and commits one batch at the
    worst moment: just after the snapshot's first look, at the queue or at the ledger."""

    def __init__(self, data_dir: Path) -> None:
        self.node_id = "edge-1"
        self.data_dir = data_dir
        self.ledger = BillingLedger.open(data_dir)
        self.committed = False

    def flush(self) -> None:
        if self.committed:
            return
        planned = MeterEventBatch("en_a", TENANT, "api", 0, 1, 1, "queue", 1, 1)
        self.ledger.record_plan(PlannedRange("queue", 1, 1, (planned,)), 1)
        self.ledger.confirm("en_a", 2)
        self.committed = True

    def queue_depth(self) -> int:
        depth = 0 if self.committed else 1
        self.flush()
        return depth

    @contextlib.contextmanager
    def node_db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.data_dir / "node.sqlite")
        try:
            yield conn
        finally:
            conn.close()
            self.flush()


def test_a_flush_finishing_during_the_snapshot_never_looks_settled_on_a_stale_ledger(
    tmp_path: Path,
) -> None:
    """The queue is read before the ledger: the batch is either on the queue still or in
    the ledger, never neither (which the checker would take for a unit billed twice)."""
    node = FlushingNode(tmp_path)
    replica = read_edge(node, [])  # type: ignore[arg-type]
    node.ledger.close()
    assert replica.queue_depth == 1 or "en_a" in replica.batches
