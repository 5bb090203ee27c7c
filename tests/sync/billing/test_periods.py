"""Where a batch is stamped: inside a period of the subscription that Stripe still invoices."""

from __future__ import annotations

import pytest

from edge_node.errors import ConfigError
from sync.billing.periods import (
    DRAFT_RECHECK_SECONDS,
    PERIODS_TTL_SECONDS,
    PeriodBook,
    Stamp,
    StampSlot,
    place,
    slotted,
    still_invoiced,
)
from sync.stripe.periods import OpenDraft, SubscriptionPeriods

DAY = 86_400
START = 1_767_225_600  # the subscription's start
PERIOD = START + 31 * DAY  # the current period's start (the second period)
ENDED = OpenDraft(START, PERIOD, PERIOD + 3600)  # the first period's draft, 1 h grace
PERIODS = SubscriptionPeriods("sub_1", START, PERIOD, PERIOD + 28 * DAY, (ENDED,))


class TestPlace:
    def test_usage_in_the_current_period_keeps_its_window(self) -> None:
        """A window in the open period is stamped with its own start."""
        assert place(PERIOD + 600, PERIODS, PERIOD + 900) == Stamp(PERIOD + 600, "own")

    def test_usage_of_an_ended_period_reaches_its_draft_while_it_is_open(self) -> None:
        """Half an hour after the period ended, its invoice finalizing half an hour later:
        the usage goes to its own period."""
        now = PERIOD + 1800
        assert place(PERIOD - 600, PERIODS, now) == Stamp(PERIOD - 600, "own")

    def test_usage_of_a_period_finalizing_within_the_margin_is_carried_forward(self) -> None:
        """Ten minutes before its invoice is finalized, a send might land too late: the
        usage is stamped at the open period's start instead."""
        now = PERIOD + 3000
        assert place(PERIOD - 600, PERIODS, now) == Stamp(PERIOD, "carried_forward")

    def test_usage_of_a_finalized_period_is_carried_forward(self) -> None:
        """Its period's invoice is no longer a draft: stamped at the open period's start."""
        finalized = SubscriptionPeriods("sub_1", START, PERIOD, PERIOD + 28 * DAY)
        assert place(PERIOD - 600, finalized, PERIOD + 4 * DAY) == (
            Stamp(PERIOD, "carried_forward")
        )

    def test_usage_before_the_subscription_is_stamped_at_its_start(self) -> None:
        """Served a minute before the subscription existed, in its first period still open:
        stamped at the subscription's start."""
        first = SubscriptionPeriods("sub_1", START, START, START + 31 * DAY)
        assert place(START - 60, first, START + 120) == Stamp(START, "before_subscription")


class TestStillInvoiced:
    def test_a_stamp_is_invoiced_until_its_draft_is_about_to_finalize(self) -> None:
        """A sent batch's stamp in an ended period counts while its draft finalizes more
        than two minutes ahead; before the subscription, never."""
        assert still_invoiced(PERIOD - 600, PERIODS, PERIOD + 600)
        assert not still_invoiced(PERIOD - 600, PERIODS, PERIOD + 3550)
        assert still_invoiced(PERIOD + 5, PERIODS, PERIOD + 10 * DAY)
        assert not still_invoiced(START - 1, PERIODS, START)


class ListedPeriods:
    """Stripe's answers to the periods read, in turn: what the PeriodBook asks of a gateway."""

    def __init__(self, *answers: SubscriptionPeriods) -> None:
        self.answers = list(answers)
        self.reads = 0

    async def subscription_periods(self, customer_id: str) -> SubscriptionPeriods | None:
        self.reads += 1
        return self.answers[min(self.reads, len(self.answers)) - 1]


class TestPeriodBook:
    async def test_within_the_grace_a_missing_draft_is_looked_for_again_soon(self) -> None:
        """Read just after a renewal, before Stripe lists the ended period's draft: within
        the account's grace (2 h here) the periods are read again a minute later, and the
        draft, listed by then, takes the ended period's usage; once found they are kept."""
        renewed = SubscriptionPeriods("sub_1", START, PERIOD, PERIOD + 28 * DAY)
        listed = ListedPeriods(renewed, PERIODS)
        book = PeriodBook(listed, grace=7200)
        assert await book.periods("cus_1", PERIOD + 10) == renewed
        assert await book.periods("cus_1", PERIOD + 10 + DRAFT_RECHECK_SECONDS - 1) == renewed
        found = await book.periods("cus_1", PERIOD + 10 + DRAFT_RECHECK_SECONDS)
        assert (found, listed.reads) == (PERIODS, 2)
        assert place(PERIOD - 600, found, PERIOD + 120) == Stamp(PERIOD - 600, "own")
        await book.periods("cus_1", PERIOD + 10 + DRAFT_RECHECK_SECONDS + 300)
        assert listed.reads == 2

    async def test_past_the_grace_a_missing_draft_is_not_waited_for(self) -> None:
        """Past the grace the ended period's invoice is finalized: nothing to look for, the
        periods are kept for the usual time."""
        renewed = SubscriptionPeriods("sub_1", START, PERIOD, PERIOD + 28 * DAY)
        listed = ListedPeriods(renewed)
        book = PeriodBook(listed, grace=3600)
        await book.periods("cus_1", PERIOD + 3600)
        await book.periods("cus_1", PERIOD + 3600 + PERIODS_TTL_SECONDS - 1)
        assert listed.reads == 1


class TestSlotted:
    def test_with_one_slot_every_stamp_stays(self) -> None:
        assert slotted(Stamp(PERIOD + 601, "own"), PERIODS, StampSlot()) == Stamp(
            PERIOD + 601, "own"
        )

    def test_a_stamp_moves_back_to_the_latest_minute_of_the_node_slot(self) -> None:
        """Slot 1 of 3: minute numbers 1, 4, 7... modulo 3; a stamp in minute m goes back to
        the latest such minute, never into another node's minutes."""
        minute = (PERIOD + 3600) // 60
        for offset in range(6):
            stamp = Stamp((minute + offset) * 60 + 17, "own")
            moved = slotted(stamp, PERIODS, StampSlot(1, 3))
            assert (moved.timestamp // 60) % 3 == 1
            assert 0 <= stamp.timestamp - moved.timestamp < 3 * 60
            assert moved.placement == "own"

    def test_at_a_period_start_it_moves_forward_within_the_period(self) -> None:
        """Moving back would leave the period (here the current one, and the subscription's
        start for usage from before it): forward instead, by less than `slots` minutes."""
        slot = StampSlot((PERIOD // 60 + 2) % 4, 4)
        moved = slotted(Stamp(PERIOD, "carried_forward"), PERIODS, slot)
        assert moved == Stamp(PERIOD + 120, "carried_forward")
        first = SubscriptionPeriods("sub_1", START, START, START + 31 * DAY)
        before = slotted(
            Stamp(START, "before_subscription"), first, StampSlot((START // 60 + 1) % 2, 2)
        )
        assert before == Stamp(START + 60, "before_subscription")

    def test_a_slot_outside_the_slots_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigError, match="stamp_slot"):
            StampSlot(2, 2)
