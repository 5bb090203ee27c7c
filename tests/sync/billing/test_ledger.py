"""The billing ledger in a real node.sqlite: atomic plans, first write wins, states only advance."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.tenants.registry import TenantRegistry
from sync.billing.ledger import BillingLedger
from sync.billing.periods import Stamp
from sync.billing.plan import MeterEventBatch, PlannedRange

T0 = 1_700_000_040


def batch(tenant: str, value: int, first: int, last: int, window: int = T0) -> MeterEventBatch:
    return MeterEventBatch(
        f"id-{tenant}-{window}-{first}-{last}",
        tenant,
        "requests",
        window,
        value,
        max(value, 1),
        "worker-0",
        first,
        last,
    )


def planned(first: int, last: int, *batches: MeterEventBatch) -> PlannedRange:
    return PlannedRange("worker-0", first, last, batches)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[TenantRegistry]:
    opened = TenantRegistry.open(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def ledger(tmp_path: Path, registry: TenantRegistry) -> Iterator[BillingLedger]:
    opened = BillingLedger.open(tmp_path)
    yield opened
    opened.close()


class TestPlans:
    def test_a_plan_is_written_whole_or_not_at_all(self, ledger: BillingLedger) -> None:
        """A range whose batches cannot all be written leaves no batch and no planned mark."""
        with pytest.raises(sqlite3.IntegrityError):
            ledger.record_plan(planned(1, 5, batch("a", 3, 1, 5), batch("b", 0, 1, 5)), 1)
        assert ledger.open_batches() == []
        assert ledger.positions.planned_through("worker-0") == 0

    def test_a_batch_written_again_keeps_its_first_value(self, ledger: BillingLedger) -> None:
        """INSERT OR IGNORE: the same identifier planned again never changes its value."""
        ledger.record_plan(planned(1, 5, batch("a", 3, 1, 5)), 1)
        assert ledger.record_plan(planned(1, 5, batch("a", 99, 1, 5)), 2) == 0
        [stored] = ledger.open_batches()
        assert (stored.value, stored.state, stored.planned_at) == (3, "planned", 1)
        assert ledger.positions.planned_through("worker-0") == 5

    def test_a_batch_takes_its_tenants_customer_when_there_is_one(
        self, ledger: BillingLedger, registry: TenantRegistry
    ) -> None:
        """Planned batches get the tenant's Stripe customer at planning, or later once the
        tenant is provisioned; a batch keeps the customer it was given."""
        ready, _ = registry.create_tenant("ready")
        later, _ = registry.create_tenant("later")
        registry.set_stripe_customer(ready.tenant_id, "cus_ready")
        ledger.record_plan(
            planned(1, 2, batch(ready.tenant_id, 1, 1, 2), batch(later.tenant_id, 1, 1, 2)), 1
        )
        customers = {b.tenant_id: b.customer_id for b in ledger.open_batches()}
        assert customers == {ready.tenant_id: "cus_ready", later.tenant_id: None}
        assert [b.tenant_id for b in ledger.sendable("worker-0", 10)] == [ready.tenant_id]
        registry.set_stripe_customer(later.tenant_id, "cus_later")
        assert ledger.attach_customers() == 1
        assert {b.customer_id for b in ledger.sendable("worker-0", 10)} == {
            "cus_ready",
            "cus_later",
        }


OWN = Stamp(1_700_000_040, "own")


class TestStates:
    def test_attempts_count_and_the_first_send_time_stays(self, ledger: BillingLedger) -> None:
        """Each send is counted; first_sent_at keeps the first one (Stripe's dedup clock)."""
        ledger.record_plan(planned(1, 1, batch("a", 1, 1, 1)), 1)
        ledger.mark_sent("id-a-1700000040-1-1", 10, OWN)
        ledger.mark_sent("id-a-1700000040-1-1", 20, OWN)
        stored = ledger.get("id-a-1700000040-1-1")
        assert stored is not None
        assert (stored.state, stored.attempts, stored.first_sent_at) == ("sent", 2, 10)
        assert (stored.stamp, stored.placement) == (1_700_000_040, "own")

    def test_the_first_attempt_fixes_the_stamp_until_it_is_undone(
        self, ledger: BillingLedger
    ) -> None:
        """A resend carries the stamp of the first attempt; an attempt proven not received
        lets the next one choose its stamp again (its period may have closed meanwhile)."""
        ident = "id-a-1700000040-1-1"
        ledger.record_plan(planned(1, 1, batch("a", 1, 1, 1)), 1)
        ledger.mark_sent(ident, 10, OWN)
        ledger.mark_sent(ident, 20, Stamp(1_700_100_000, "carried_forward"))
        stored = ledger.get(ident)
        assert stored is not None
        assert (stored.stamp, stored.placement) == (1_700_000_040, "own")
        ledger.unmark_sent(ident, 1)  # not the latest attempt: stays sent
        ledger.send_afresh([ident])
        stored = ledger.get(ident)
        assert stored is not None
        assert (stored.state, stored.stamp, stored.placement) == ("planned", None, None)
        assert stored.sent_identifier.startswith("en_")
        assert stored.sent_identifier != ident

    def test_an_attempt_proven_not_received_is_undone_only_if_it_made_the_batch_sent(
        self, ledger: BillingLedger
    ) -> None:
        """unmark_sent returns a batch this attempt made `sent` to `planned` without
        first_sent_at (the attempt count stays); a batch an earlier attempt made `sent`
        (outcome unknown) stays as it is."""
        ident = "id-a-1700000040-1-1"
        ledger.record_plan(planned(1, 1, batch("a", 1, 1, 1)), 1)
        assert ledger.mark_sent(ident, 10, OWN) == (1, True)
        ledger.unmark_sent(ident, 1)
        stored = ledger.get(ident)
        assert stored is not None
        assert (stored.state, stored.attempts, stored.first_sent_at) == ("planned", 1, None)
        assert ledger.mark_sent(ident, 20, OWN) == (2, True)  # unknown from here on
        assert ledger.mark_sent(ident, 30, OWN) == (3, False)
        stored = ledger.get(ident)
        assert stored is not None
        assert (stored.state, stored.attempts, stored.first_sent_at) == ("sent", 3, 20)

    def test_a_settled_batch_never_moves_again(self, ledger: BillingLedger) -> None:
        """A batch set aside is never confirmed or sent afterwards, and a confirmed one is
        never set aside."""
        ledger.record_plan(planned(1, 1, batch("a", 1, 1, 1), batch("b", 1, 1, 1)), 1)
        ledger.set_aside([("id-a-1700000040-1-1", "reason")])
        ledger.confirm("id-a-1700000040-1-1", 5)
        ledger.mark_sent("id-a-1700000040-1-1", 5, OWN)
        ledger.confirm("id-b-1700000040-1-1", 5)
        ledger.set_aside([("id-b-1700000040-1-1", "late")])
        a, b = ledger.get("id-a-1700000040-1-1"), ledger.get("id-b-1700000040-1-1")
        assert a is not None
        assert (a.state, a.attempts, a.set_aside_reason) == (
            "set_aside",
            0,
            "reason",
        )
        assert b is not None
        assert (b.state, b.set_aside_reason) == ("confirmed", None)


class TestCommitPoint:
    def test_the_cursor_may_pass_only_settled_ranges(self, ledger: BillingLedger) -> None:
        """The commit point stops just before the oldest range with a batch open, and reaches
        the last planned record once every batch is settled."""
        ledger.record_plan(planned(1, 4, batch("a", 1, 1, 4), batch("b", 1, 1, 4)), 1)
        ledger.record_plan(planned(5, 9, batch("a", 1, 5, 9, T0 + 60)), 1)
        assert ledger.positions.commit_point("worker-0") == 0
        ledger.confirm("id-a-1700000040-1-4", 2)
        assert ledger.positions.commit_point("worker-0") == 0
        ledger.set_aside([("id-b-1700000040-1-4", "refused")])
        assert ledger.positions.commit_point("worker-0") == 4
        ledger.confirm("id-a-1700000100-5-9", 3)
        assert ledger.positions.commit_point("worker-0") == 9
