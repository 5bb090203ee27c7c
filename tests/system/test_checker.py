"""The checker itself: it flags each kind of broken guarantee, and nothing that is not one."""

from __future__ import annotations

from edge_node.rating.store import rating_id
from tests.system.checker import check_ratings, check_replicas
from tests.system.record import Observations, WriteOp
from tests.system.snapshot import Replica, Row

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
