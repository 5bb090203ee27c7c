"""Stripe's meter error reports applied to the ledger: usage Stripe dropped leaves "confirmed".

Stripe validates meter events after accepting them and reports the invalid ones in thin
events (sync/stripe/meter_errors.py). The webhook endpoint records each notification once
(edge_node/tenants/thin_events.py); this job, run by the sync worker every
`stripe.provisioning_interval_seconds`, fetches each pending one from Stripe and moves every
batch it names (by the identifier Stripe holds it under) to `set_aside`, with Stripe's error
code and message as the reason, whatever its state was: confirmed usage that Stripe dropped
was never billed. The move is counted (`set_aside_reported`), logged at ERROR, and listed by
`billing reconcile`. Errors a report counts without naming them (Stripe names samples only)
are logged and counted apart (`meter_errors_unnamed`). A notification is settled only once
applied, so a crash or an unreachable Stripe leaves it pending for the next run; applying
one twice changes nothing (a batch set aside stays so).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Protocol

from edge_node.errors import PermanentSyncError
from edge_node.tenants.thin_events import ThinEventStore
from sync.billing.ledger import BillingLedger
from sync.billing.stats import BillingStats
from sync.stripe.meter_errors import MeterErrorReport

log = logging.getLogger(__name__)

JOB_NAME = "stripe-meter-errors"


class ReportGateway(Protocol):
    """What the job needs of Stripe (sync/stripe/gateway.py's StripeGateway)."""

    async def meter_error_report(self, event_id: str) -> MeterErrorReport: ...


@dataclass
class MeterErrorJob:
    """Applies pending meter error reports; a sync worker job (sync/jobs.py)."""

    gateway: ReportGateway
    node_database: sqlite3.Connection
    ledger: BillingLedger
    interval: float
    name: str = JOB_NAME
    stats: BillingStats = field(default_factory=BillingStats)

    async def run(self) -> None:
        events = ThinEventStore(self.node_database)
        for pending in events.pending():
            try:
                report = await self.gateway.meter_error_report(pending.event_id)
            except PermanentSyncError as exc:  # Stripe no longer has it (kept 30 days)
                log.error("Stripe meter error report %s cannot be read: %s", pending.event_id, exc)
                events.settle(pending.event_id, f"unreadable: {exc}")
                continue
            events.settle(pending.event_id, self.apply(report))

    def apply(self, report: MeterErrorReport) -> str:
        """Set aside what the report names; what it did, in words."""
        moved = self.ledger.reported_by_stripe(
            [
                (
                    e.identifier,
                    f"dropped by Stripe after it accepted it ({report.type}):"
                    f" {e.code}: {e.message}",
                )
                for e in report.errors
            ]
        )
        self.stats.meter_error_reports += 1
        self.stats.set_aside_reported += len(moved)
        self.stats.meter_errors_unnamed += report.unnamed
        for batch in moved:
            log.error(
                "billing: batch %s (tenant %s, customer %s, %d units, was %s) set aside: Stripe"
                " reported it invalid after accepting it (%s); see `edge-node billing reconcile`",
                batch.identifier,
                batch.tenant_id,
                batch.customer_id,
                batch.value,
                batch.state,
                report.event_id,
            )
        if report.unnamed:
            log.error(
                "billing: Stripe's meter error report %s counts %d errors it does not name;"
                " compare the meter's event summaries with `edge-node billing reconcile`",
                report.event_id,
                report.unnamed,
            )
        return f"{len(moved)} batches set aside, {report.unnamed} errors unnamed"

    async def close(self) -> None:
        self.ledger.close()
