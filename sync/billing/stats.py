"""The usage flush's counters since start, for logs, status and metrics.

Each queue's flush (sync.billing.flush) keeps a `BillingStats` and sending (sync.billing.send)
counts into it. The sync worker sums them into the jobs file (sync.job_status_file), and
the serving workers of `serve --workers N` read that sum back as a `BillingStats`
(sync.status_files): one definition, so a counter added here is written and read alike. A
module of its own, so a process that only reads the counters never loads the Stripe SDK.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BillingStats:
    """Counters since start, for logs, status and metrics."""

    planned_ranges: int = 0
    planned_batches: int = 0
    unreadable_records: int = 0
    calls: int = 0
    confirmed: int = 0
    duplicates: int = 0
    transient_failures: int = 0
    set_aside_refused: int = 0
    set_aside_unknown_outcome: int = 0
    set_aside_too_old: int = 0
    set_aside_future: int = 0
    set_aside_reported: int = 0  # dropped by Stripe after it accepted them (meter errors)
    carried_forward: int = 0  # confirmed, stamped in a later period than their window's
    before_subscription: int = 0  # confirmed, stamped at the subscription's start
    resolved_landed: int = 0  # unknown outcomes Stripe's summaries showed had landed
    resolved_resent: int = 0  # unknown outcomes that had not: sent again, fresh identifier
    meter_error_reports: int = 0  # Stripe's meter error reports applied
    meter_errors_unnamed: int = 0  # errors those reports counted without naming the event

    @property
    def set_aside(self) -> int:
        return (
            self.set_aside_refused
            + self.set_aside_unknown_outcome
            + self.set_aside_too_old
            + self.set_aside_future
            + self.set_aside_reported
        )
