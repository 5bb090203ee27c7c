"""The tenant's usage API answered from this node's files (edge_node.tenant_usage): the
billing ledger and the periods kept in node.sqlite, and the usage queues' unplanned records.

node.sqlite is read in one read-only snapshot and the queues without their locks
(sync/billing/local_reads.py), so an answer never waits on Stripe, the sync worker or a
serving worker. Each ledger batch carries its units by operation (sync/billing/plan.py); a
batch planned before that was kept, and a queued record without an operation, count under
the unknown operation (edge_node.usage.event.UNKNOWN_OPERATION).

The periods are the ones the billing flush last read from Stripe, with what webhooks reported
of their invoices (edge_node/tenants/billing_periods.py). When the latest known has ended, the
current period is taken to start at its end, its end unknown until the flush reads it; when
none is known, all the tenant's usage is current.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from edge_node import sqlite
from edge_node.errors import NotAUsageEvent
from edge_node.tenant_usage.model import Figure, InvoiceState, PeriodUsage, TenantUsage
from edge_node.tenants.billing_periods import KnownPeriod, latest
from edge_node.usage.event import UNKNOWN_OPERATION
from sync.billing.local_reads import planned_through, queue_directories, read_only, unplanned

_FIGURE_OF_STATE: dict[str, Figure] = {
    "planned": "pending",
    "sent": "sent",
    "confirmed": "confirmed",
}


class LocalUsage:
    """The usage API's source on the data directory `data_dir`, as of `clock` (Unix seconds:
    the clock the flush reads periods by)."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = data_dir
        self.clock = clock

    def usage(self, tenant_id: str) -> TenantUsage:
        now = self.clock()
        with read_only(self.data_dir / "node.sqlite") as conn:
            conn.execute("BEGIN")  # one snapshot: a batch is counted in one state only
            known = latest(conn, tenant_id)
            current, previous = periods_at(known, now)
            shown = [p for p in (previous, current) if p is not None]
            if sqlite.has_table(conn, "billing_ledger"):
                _add_ledger(conn, tenant_id, shown, now)
            planned = planned_through(conn)
            conn.execute("COMMIT")
        for directory in queue_directories(self.data_dir):
            for usage in unplanned(directory, planned.get(directory.name, 0)):
                if isinstance(usage, NotAUsageEvent) or usage.tenant_id != tenant_id:
                    continue
                period = _period_of(shown, usage.timestamp_ms / 1000)
                if period is not None:
                    period.add(usage.operation, "pending", usage.units)
        return TenantUsage(tenant_id, now, current, previous)


def periods_at(known: list[KnownPeriod], now: float) -> tuple[PeriodUsage, PeriodUsage | None]:
    """The current and previous periods at `now`, from the latest known (latest first)."""
    if not known:
        return PeriodUsage(None, None, "unknown"), None
    latest = known[0]
    if now >= latest.end:
        return PeriodUsage(latest.end, None, "unknown"), _ended(latest, now)
    earlier = known[1] if len(known) > 1 else None
    current = PeriodUsage(latest.start, latest.end, "open")
    return current, None if earlier is None else _ended(earlier, now)


def _ended(period: KnownPeriod, now: float) -> PeriodUsage:
    state: InvoiceState = "unknown"
    if period.finalizes_at is not None:
        state = "final" if period.invoice_final(now) else "draft"
    return PeriodUsage(period.start, period.end, state)


def _period_of(periods: list[PeriodUsage], seconds: float) -> PeriodUsage | None:
    return next((p for p in periods if p.holds(seconds)), None)


def _add_ledger(
    conn: sqlite3.Connection, tenant_id: str, periods: list[PeriodUsage], now: float
) -> None:
    """Add the tenant's batches served in `periods`, by state and operation, summed in SQL; a
    confirmed batch stamped into a period whose invoice is final is invoiced too."""
    final = (
        "EXISTS (SELECT 1 FROM billing_periods f WHERE f.tenant_id = b.tenant_id"
        " AND f.finalizes_at <= :now AND b.stamp >= f.period_start AND b.stamp < f.period_end)"
        if sqlite.has_table(conn, "billing_periods")
        else "0"
    )
    for period in periods:
        rows = conn.execute(
            f"SELECT b.state, j.key, {final}, sum(coalesce(j.value, b.value))"  # noqa: S608
            " FROM billing_ledger b LEFT JOIN json_each(b.operations) j"
            " WHERE b.tenant_id = :tenant AND b.state != 'set_aside'"
            " AND b.window_start >= :start AND b.window_start < :end GROUP BY 1, 2, 3",
            {
                "tenant": tenant_id,
                "now": int(now),
                "start": -(2**62) if period.start is None else period.start,
                "end": 2**62 if period.end is None else period.end,
            },
        )
        for state, operation, invoiced, units in rows:
            name = UNKNOWN_OPERATION if operation is None else str(operation)
            period.add(name, _FIGURE_OF_STATE[state], int(units))
            if state == "confirmed" and invoiced:
                period.add(name, "invoiced", int(units))
