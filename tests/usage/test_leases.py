"""Allowance leases as the request path reads them (edge_node/usage/leases.py): what a lease
allows, the leases file followed from another connection, the overshoot bound, and a lease
holding a node's spend in `PeriodSpend.take`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge_node.usage.leases import (
    Lease,
    LeaseBook,
    LeaseLimit,
    boot_id,
    lease_state,
    limit,
    open_leases,
    overshoot_bound,
    write_leases,
)
from edge_node.usage.quotas import Allowance, PeriodSpend
from edge_node.usage.served import ServedCounter

TENANT = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
PERIOD = 1_796_083_200_000  # 2026-12-01T00:00Z
NOW = 7_000_000_000_000  # a CLOCK_BOOTTIME reading, in ns
NOW_MS = int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000)


def lease(**changes: object) -> Lease:
    """A live lease of this boot: 10 units granted, 4 of them reported spent, 30 spent by the
    fleet (26 by the other nodes), nothing to spend past it once cut off (`refuse`)."""
    held = Lease(TENANT, PERIOD, 100, 10, 4, 30, False, NOW + 60 * 10**9, boot_id(), False, 0)
    return held._replace(**changes)


class TestLimit:
    def test_no_lease_for_the_period_allows_nothing_until_one_is_claimed(self) -> None:
        """No lease yet, or only last month's (even under `local`): nothing, and 503, since
        the sync worker is about to claim one."""
        assert limit(None, PERIOD, NOW) == LeaseLimit(0, 0, "unavailable")
        last_month = lease(period_start_ms=PERIOD - 30 * 86_400_000, partition_units=5)
        assert limit(last_month, PERIOD, NOW) == LeaseLimit(0, 0, "unavailable")

    def test_a_lease_of_an_earlier_boot_is_over(self) -> None:
        """Its deadline was on a clock that restarted at the boot: it allows nothing more
        under `refuse`, even before the deadline as this boot's clock reads it."""
        earlier = lease(boot_id="00000000-0000-4000-8000-000000000000", exhausted=True)
        assert limit(earlier, PERIOD, NOW) == LeaseLimit(0, 26, "cut-off")

    def test_a_live_lease_allows_its_grant_and_says_exhausted_only_if_the_fleet_did(
        self,
    ) -> None:
        """Spent, a live lease is `unavailable` (503: a renewal is coming) unless the central
        database said it had nothing more to give (429)."""
        assert limit(lease(), PERIOD, NOW) == LeaseLimit(10, 26, "unavailable")
        assert limit(lease(exhausted=True), PERIOD, NOW) == LeaseLimit(10, 26, "exhausted")

    def test_a_lease_cut_off_allows_its_grant_and_the_partition_units(self) -> None:
        """Cut off from the central database before its deadline, the node spends what it
        holds and then, under `local`, the plan's partition allowance; under `refuse`
        nothing more. Either way a refusal is 503 (`cut-off`, told to wait longer than for a
        renewal): the fleet may have units left."""
        local = lease(cut_off=True, partition_units=5)
        assert limit(local, PERIOD, NOW) == LeaseLimit(15, 26, "cut-off")
        assert limit(lease(cut_off=True), PERIOD, NOW) == LeaseLimit(10, 26, "cut-off")

    def test_a_lapsed_lease_allows_nothing_under_refuse_and_the_partition_under_local(
        self,
    ) -> None:
        """From its deadline on (the very nanosecond), the central database may give what
        the node did not report spent to other nodes: under `refuse` nothing more is spent,
        under `local` the lease and the partition allowance, as when cut off."""
        deadline = lease().valid_until_ns
        assert limit(lease(), PERIOD, deadline - 1).units == 10
        assert limit(lease(), PERIOD, deadline) == LeaseLimit(0, 26, "cut-off")
        assert limit(lease(exhausted=True), PERIOD, deadline).refusal == "cut-off"
        local = lease(partition_units=5)
        assert limit(local, PERIOD, deadline) == LeaseLimit(15, 26, "cut-off")

    def test_partition_units_used_at_an_earlier_cut_are_not_given_again(self) -> None:
        """The partition allowance is the period's: 3 of 5 served past the grants at an
        earlier cut leave 2, and all 5 leave none (still `local`: the grant stays spendable
        past the deadline)."""
        deadline = lease().valid_until_ns
        used = lease(cut_off=True, partition_units=5, partition_used=3)
        assert limit(used, PERIOD, NOW).units == 12
        assert limit(used, PERIOD, deadline).units == 12
        spent = lease(cut_off=True, partition_units=5, partition_used=5)
        assert limit(spent, PERIOD, NOW).units == 10
        assert limit(spent, PERIOD, deadline).units == 10

    def test_a_lease_state_is_none_lapsed_cut_off_or_live_as_its_limit_is(self) -> None:
        """The state shown to the tenant and in the metrics follows the same rules: another
        period's lease is none, one of an earlier boot or past its deadline is lapsed."""
        deadline = lease().valid_until_ns
        assert lease_state(None, PERIOD, NOW) == "none"
        assert lease_state(lease(period_start_ms=PERIOD - 1), PERIOD, NOW) == "none"
        assert lease_state(lease(boot_id="earlier", cut_off=True), PERIOD, NOW) == "lapsed"
        assert lease_state(lease(cut_off=True), PERIOD, deadline) == "lapsed"
        assert lease_state(lease(cut_off=True), PERIOD, deadline - 1) == "cut_off"
        assert lease_state(lease(), PERIOD, deadline - 1) == "live"


class TestLeaseBook:
    def test_the_book_reads_again_what_another_connection_wrote(self, tmp_path: Path) -> None:
        """The sync worker writes leases.sqlite from its own process; the request path's book
        follows each write (the file's data_version) once its check is due."""
        book = LeaseBook(tmp_path, refresh_seconds=0.01)
        writer = open_leases(tmp_path)
        try:
            assert book.lease(TENANT, NOW) is None
            write_leases(writer, [lease()])
            assert book.lease(TENANT, NOW + 10_000_000) == lease()
            write_leases(writer, [lease(granted=20, partition_used=2), lease(tenant_id=OTHER)])
            assert book.lease(TENANT, NOW + 20_000_000) == lease(granted=20, partition_used=2)
            assert book.lease(OTHER, NOW + 20_000_000) == lease(tenant_id=OTHER)
        finally:
            writer.close()
            book.close()

    def test_the_overshoot_bound_counts_units_held_unreported_and_partition_units(
        self,
    ) -> None:
        """Per lease of the period: granted and not reported spent (never below 0, for a
        node that spent past its grant under `local`), plus its partition units left."""
        leases = [
            lease(),  # 10 granted, 4 reported: 6
            lease(tenant_id=OTHER, granted=5, node_spent=8, partition_units=5, partition_used=2),
            lease(tenant_id="x", period_start_ms=PERIOD - 1, granted=50),  # another period
        ]
        assert overshoot_bound(leases, PERIOD) == 9


class Held:
    """Leases as PeriodSpend reads them (a LeaseBook's `limit`), allowing what a test says."""

    def __init__(self, allowed: LeaseLimit) -> None:
        self.allowed = allowed

    def limit(self, tenant_id: str, period_start_ms: int, now_ns: int) -> LeaseLimit:
        return self.allowed


class TestSpendWithinALease:
    def test_a_lease_holds_the_nodes_spend_with_units_in_flight_and_other_workers(
        self, tmp_path: Path
    ) -> None:
        """The node's spend (this worker's, the other workers', and what requests in flight
        hold) may reach the lease's units and no more, whatever the allowance has left; the
        refusal is the lease's, and a release lets one more in."""
        other_worker = ServedCounter(tmp_path / "worker-1.counts")
        other_worker.add(TENANT, NOW_MS, 2)
        other_worker.close()
        spend = PeriodSpend(tmp_path / "worker-0.counts", clock_ms=lambda: NOW_MS)
        spend.add(TENANT, NOW_MS, 1)
        allowance, held = Allowance(100, block=True), Held(LeaseLimit(5, 0, "unavailable"))
        assert spend.take(TENANT, allowance, 1, held).allowed
        assert spend.take(TENANT, allowance, 1, held).allowed
        refused = spend.take(TENANT, allowance, 1, held)
        assert (refused.allowed, refused.refusal) == (False, "unavailable")
        spend.release(TENANT, 1)
        assert spend.take(TENANT, allowance, 1, held).allowed
        exhausted = spend.take(TENANT, allowance, 1, Held(LeaseLimit(5, 0, "exhausted")))
        assert (exhausted.allowed, exhausted.refusal) == (False, "exhausted")

    def test_what_is_left_counts_the_other_nodes_spend(self) -> None:
        """The period's remaining units are the allowance less every node's spend: 100 less
        30 reported by the others, 1 served here and 1 taken now."""
        spend = PeriodSpend(None, clock_ms=lambda: NOW_MS)
        spend.add(TENANT, NOW_MS, 1)
        decision = spend.take(TENANT, Allowance(100, block=True), 1, Held(LeaseLimit(10, 30, "x")))
        assert (decision.allowed, decision.limit, decision.remaining) == (True, 100, 68)
        refused = spend.take(TENANT, Allowance(100, block=True), 9, Held(LeaseLimit(10, 30, "x")))
        assert (refused.allowed, refused.remaining, refused.refusal) == (False, 68, "x")


class TestLeaseBookLimit:
    def test_a_live_leases_answer_is_kept_until_its_deadline_or_the_file_changes(
        self, tmp_path: Path
    ) -> None:
        """Read once and kept while the lease is live; past the deadline the answer is
        worked out again (the lease has lapsed), and a write to the file is seen."""
        conn = open_leases(tmp_path)
        write_leases(conn, [lease()])
        book = LeaseBook(tmp_path, refresh_seconds=0)
        deadline = lease().valid_until_ns
        assert book.limit(TENANT, PERIOD, deadline - 2) == LeaseLimit(10, 26, "unavailable")
        assert book.limit(TENANT, PERIOD, deadline - 1) == LeaseLimit(10, 26, "unavailable")
        assert book.limit(TENANT, PERIOD, deadline).refusal == "cut-off"
        renewed = lease(granted=20, exhausted=True, valid_until_ns=deadline + 60 * 10**9)
        write_leases(conn, [renewed])
        assert book.limit(TENANT, PERIOD, deadline + 1) == LeaseLimit(20, 26, "exhausted")
        assert book.limit(TENANT, PERIOD + 1, deadline + 2).units == 0  # another period
        book.close()
        conn.close()
