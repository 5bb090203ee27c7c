"""Where a batch is stamped: inside a period of the subscription that Stripe still invoices."""

from __future__ import annotations

from sync.billing.periods import Stamp, place, still_invoiced
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
