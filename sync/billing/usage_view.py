"""The tenant's usage API answered from this node's files (edge_node.tenant_usage): the
billing ledger and the periods kept in node.sqlite, and the usage queues' unplanned records.

node.sqlite is read in one read-only snapshot and the queues without their locks
(sync/billing/local_reads.py), so an answer never waits on Stripe, the sync worker or a
serving worker. Each ledger batch carries its units by operation (sync/billing/plan.py); a
batch planned before that was kept, and a queued record without an operation, count under
the unknown operation (edge_node.usage.event.UNKNOWN_OPERATION).

The periods are the ones the billing flush last read from Stripe (sync/billing/known_periods.py).
When the latest known has ended, the current period is taken to start at its end, its end
unknown until the flush reads it; when none is known, all the tenant's usage is current.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from edge_node import sqlite
from edge_node.errors import NotAUsageEvent
from edge_node.tenant_usage.model import Figure, InvoiceState, PeriodUsage, TenantUsage
from edge_node.usage.event import UNKNOWN_OPERATION
from sync.billing import known_periods
from sync.billing.known_periods import KnownPeriod
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
            known = known_periods.latest(conn, tenant_id)
            current, previous = periods_at(known, now)
            shown = [p for p in (previous, current) if p is not None]
            finals = known_periods.finalized_before(conn, tenant_id, now)
            if sqlite.has_table(conn, "billing_ledger"):
                _add_ledger(conn, tenant_id, shown, finals)
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
    conn: sqlite3.Connection,
    tenant_id: str,
    periods: list[PeriodUsage],
    finals: list[KnownPeriod],
) -> None:
    """Add the tenant's batches served in `periods`, by state and operation; a confirmed
    batch stamped into a period whose invoice is final is invoiced too."""
    since = min((p.start for p in periods if p.start is not None), default=None)
    if since is None or any(p.start is None for p in periods):
        since = 0
    rows = conn.execute(
        "SELECT state, window_start, stamp, value, operations FROM billing_ledger"
        " WHERE tenant_id = ? AND window_start >= ? AND state != 'set_aside'",
        (tenant_id, since),
    )
    for state, window_start, stamp, value, operations in rows:
        period = _period_of(periods, window_start)
        if period is None:
            continue
        by_operation = _operations(operations, value)
        invoiced = stamp is not None and any(f.start <= stamp < f.end for f in finals)
        for operation, units in by_operation.items():
            period.add(operation, _FIGURE_OF_STATE[state], units)
            if state == "confirmed" and invoiced:
                period.add(operation, "invoiced", units)


def _operations(column: str | None, value: int) -> dict[str, int]:
    """A batch's units by operation; all under the unknown operation where not kept."""
    if column is None:
        return {UNKNOWN_OPERATION: value}
    loaded = json.loads(column)
    return {str(name): int(units) for name, units in loaded.items()}
