"""When a planned or sent batch may be sent, must wait, must be settled from Stripe's meter
event summaries, or must be set aside: Stripe's identifier window (24 hours) and its meter
event timestamp window (35 days back, 5 minutes ahead), with margins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sync.billing.ledger_batch import LedgerBatch

HOUR = 3600.0
DAY = 24 * HOUR
# Stripe refuses meter events older than 35 days or more than 5 minutes ahead; the margins
# leave room for the call itself and for clock error.
STRIPE_MAX_AGE_SECONDS = 35 * DAY - HOUR
STRIPE_MAX_AHEAD_SECONDS = 4 * 60.0
# A window this far ahead of the clock is not a clock a few minutes off: set it aside.
FUTURE_LIMIT_SECONDS = DAY

Verdict = Literal["send", "hold", "set_aside", "resolve"]


@dataclass(frozen=True)
class SendRules:
    """When a batch may be sent, must wait, must be settled or must be set aside; times in
    Unix seconds."""

    unknown_outcome_horizon_seconds: float = 23 * HOUR
    max_age_seconds: float = STRIPE_MAX_AGE_SECONDS
    max_ahead_seconds: float = STRIPE_MAX_AHEAD_SECONDS
    future_limit_seconds: float = FUTURE_LIMIT_SECONDS

    def verdict(
        self, batch: LedgerBatch, now: float, horizon_now: float | None = None
    ) -> tuple[Verdict, str, str]:
        """(verdict, reason, counter): resolve (ask Stripe's summaries) when a resend could
        bill twice, set_aside when the window is too old or too far ahead, hold while it is
        a little ahead of the clock. The age of an unknown outcome is read on `horizon_now`
        (the clock first_sent_at was written with, sync/billing/clock.py), the timestamp
        rules on the wall clock `now`."""
        if batch.first_sent_at is not None and batch.state == "sent":
            age = (now if horizon_now is None else horizon_now) - batch.first_sent_at / 1e6
            if age >= self.unknown_outcome_horizon_seconds:
                return (
                    "resolve",
                    f"outcome unknown: first sent {when(batch.first_sent_at / 1e6)} "
                    f"({batch.attempts} attempts) and no answer recorded within "
                    f"{self.unknown_outcome_horizon_seconds / HOUR:g} h, past which Stripe's "
                    "identifier dedup could no longer stop a second charge",
                    "",
                )
        if now - batch.window_start > self.max_age_seconds:
            return (
                "set_aside",
                f"window {when(batch.window_start)} is past Stripe's 35-day limit for "
                "meter event timestamps",
                "set_aside_too_old",
            )
        if batch.window_start - now > self.future_limit_seconds:
            return (
                "set_aside",
                f"window {when(batch.window_start)} is more than "
                f"{self.future_limit_seconds / HOUR:g} h ahead of this node's clock",
                "set_aside_future",
            )
        if batch.window_start - now > self.max_ahead_seconds:
            return "hold", "window ahead of the clock", ""
        return "send", "", ""


def when(seconds: float) -> str:
    """A Unix time as an RFC 3339 UTC second, for reasons and logs."""
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
