"""PeriodSpend: a tenant's units in its billing period, from the served counts in memory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge_node.usage.quotas import Allowance, PeriodSpend, calendar_month
from edge_node.usage.served import ServedCounter

TENANT = "11111111-1111-4111-8111-111111111111"


def ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)


class TestCalendarMonth:
    def test_a_period_is_the_utc_month_and_december_ends_in_january(self) -> None:
        """A period without a Stripe subscription runs from 00:00 UTC on the 1st to the next."""
        assert calendar_month(ms(2026, 12, 7, 6)) == (ms(2026, 12, 1), ms(2027, 1, 1))
        assert calendar_month(ms(2026, 2, 28, 23)) == (ms(2026, 2, 1), ms(2026, 3, 1))
        assert calendar_month(ms(2026, 3, 1)) == (ms(2026, 3, 1), ms(2026, 4, 1))


class TestPeriodSpend:
    def test_spend_counts_this_workers_file_and_the_other_workers_in_the_period_only(
        self, tmp_path: Path
    ) -> None:
        """Usage counted before the process started, by this worker or another, is spent;
        usage of an earlier month is not."""
        own, other = tmp_path / "worker-0.counts", tmp_path / "worker-1.counts"
        for path, units in ((own, 3), (other, 4)):
            counter = ServedCounter(path)
            counter.add(TENANT, ms(2026, 12, 2), units)
            counter.add(TENANT, ms(2026, 11, 30, 23), 100)
            counter.close()
        spend = PeriodSpend(own, clock_ms=lambda: ms(2026, 12, 7))
        assert spend.spent(TENANT) == 7
        spend.add(TENANT, ms(2026, 12, 7), 2)
        assert spend.spent(TENANT) == 9

    def test_a_block_allowance_refuses_what_is_held_by_requests_in_flight(self) -> None:
        """Units held by requests not yet over count against the allowance; released, they
        do not count until served."""
        spend = PeriodSpend(None, clock_ms=lambda: ms(2026, 12, 7))
        allowance = Allowance(2, block=True)
        assert spend.take(TENANT, allowance, 1).allowed
        assert spend.take(TENANT, allowance, 1).allowed
        refused = spend.take(TENANT, allowance, 1)
        assert (refused.allowed, refused.remaining) == (False, 0)
        spend.release(TENANT, 1)
        assert spend.take(TENANT, allowance, 1).allowed

    def test_an_overage_allowance_admits_past_the_limit_and_says_none_is_left(self) -> None:
        spend = PeriodSpend(None, clock_ms=lambda: ms(2026, 12, 7))
        spend.add(TENANT, ms(2026, 12, 7), 5)
        decision = spend.take(TENANT, Allowance(3, block=False), 1)
        assert (decision.allowed, decision.limit, decision.remaining) == (True, 3, 0)

    def test_a_new_month_starts_from_zero_and_resets_at_its_end(self) -> None:
        """Spend of the month before stays behind; Retry-After counts to the next 1st."""
        now = [ms(2026, 12, 31, 23)]
        spend = PeriodSpend(None, clock_ms=lambda: now[0])
        spend.add(TENANT, now[0], 5)
        assert spend.take(TENANT, Allowance(5, block=True), 1).reset_seconds == 3600
        now[0] = ms(2027, 1, 1, 1)
        decision = spend.take(TENANT, Allowance(5, block=True), 1)
        assert (decision.allowed, decision.remaining) == (True, 4)
        assert decision.window_seconds == 31 * 86400
        assert spend.spent(TENANT) == 0
