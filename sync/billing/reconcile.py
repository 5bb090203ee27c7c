"""Reconciliation: per tenant and billing period, the usage served against where it went and
what Stripe invoiced (sync/billing/statements.py), made from per tenant and day tallies.

`edge-node billing reconcile` runs beside the daemon: node.sqlite is opened read-only and
the queue read without its lock (edge_node.queue.inspect_queue, tail_records), so nothing
is changed and nothing waits. Every event billing holds is in exactly one place:

    recorded = queued (on the queue, not planned yet) + the events of the ledger's batches
    billed = confirmed - included     in flight = queued + planned + sent

Confirmed usage of a flat-plan tenant went to the unpriced meter (sync/stripe/catalog.py):
it is included in the flat fee, and never counted as billed. Other confirmed usage is split
by where it was stamped (sync/billing/periods.py): in its own
window's period, at the subscription's start (served before the subscription existed), or
carried forward into a later open period because its own period's invoice was finalized;
planned usage of a tenant without a Stripe customer is shown apart (`no_customer`), since it
cannot be billed until provisioning succeeds. Each tenant-day carries a statement:

    served = own period + before subscription + carried forward + included in the flat fee
             + set aside + in flight + difference


and `served` is counted apart, where requests are served (edge_node/usage/served.py, one counts
file per worker). A day is in order when recorded = billed + in flight, and served is not
more than recorded. What is neither billed nor in flight was set aside (listed with the
reason) or cannot be read; what was served but is not recorded was lost before billing
could see it; the command then exits non-zero. The counts are read first, then the ledger
in one snapshot, then the queue after the last range planned as of that snapshot: a range
the daemon plans meanwhile is counted once, as queued, and a request served meanwhile can
only make recorded exceed served, never the reverse. Without any counts file (a data
directory metered before the counts existed) served is taken to be recorded.

The same snapshot is tallied per tenant and billing period (sync/billing/statements.py), with
the customers' invoices when Stripe was read (`stripe_invoices`, through the adapter): the
report is in order only when no period's statement is unexplained either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from edge_node import sqlite
from edge_node.errors import NotAUsageEvent
from edge_node.usage.served import read_counts
from sync.billing.local_reads import planned_through, queue_directories, read_only, unplanned
from sync.billing.periods import PLACEMENTS
from sync.billing.statements import PeriodStatements
from sync.stripe.catalog import INCLUDED_SUFFIX
from sync.stripe.periods import InvoicedPeriod

STATES = ("planned", "sent", "confirmed", "set_aside")


@dataclass
class Tally:
    """Batches, events and units in one state (batches stay 0 for queued usage)."""

    batches: int = 0
    events: int = 0
    units: int = 0

    def add(self, batches: int, events: int, units: int) -> None:
        self.batches += batches
        self.events += events
        self.units += units

    def to_json(self, *, with_batches: bool = True) -> dict[str, int]:
        document = {"events": self.events, "units": self.units}
        return {"batches": self.batches, **document} if with_batches else document


@dataclass
class TenantDay:
    """One tenant's usage on one UTC day, by where it stands."""

    tenant_id: str
    day: str
    queued: Tally = field(default_factory=Tally)
    states: dict[str, Tally] = field(default_factory=lambda: {s: Tally() for s in STATES})
    counted: Tally | None = None  # served, as counted where requests are served
    placements: dict[str, Tally] = field(default_factory=lambda: {p: Tally() for p in PLACEMENTS})
    no_customer: Tally = field(default_factory=Tally)  # planned, the tenant not provisioned
    included: Tally = field(default_factory=Tally)  # confirmed on the unpriced meter (flat)

    @property
    def recorded(self) -> Tally:
        """What billing holds: queued, and every ledger batch."""
        total = Tally()
        for tally in (self.queued, *self.states.values()):
            total.add(0, tally.events, tally.units)
        return total

    @property
    def served(self) -> Tally:
        return self.recorded if self.counted is None else self.counted

    @property
    def unrecorded_units(self) -> int:
        """Units served that billing holds no record of (lost before it could see them)."""
        return max(0, self.served.units - self.recorded.units)

    @property
    def in_flight_units(self) -> int:
        return self.queued.units + self.states["planned"].units + self.states["sent"].units

    @property
    def unbilled_units(self) -> int:
        """Recorded units neither billed nor on their way: set aside."""
        return self.recorded.units - self.states["confirmed"].units - self.in_flight_units

    @property
    def ok(self) -> bool:
        return self.unbilled_units == 0 and self.unrecorded_units == 0

    def statement(self) -> dict[str, int]:
        """Served against where it went, in units: own period, before the subscription (at
        its start), carried forward, set aside, in flight, and what none of them explains."""
        parts = {
            "served": self.served.units,
            "billed_in_own_period": self.placements["own"].units,
            "billed_from_before_subscription": self.placements["before_subscription"].units,
            "carried_forward": self.placements["carried_forward"].units,
            "included_in_flat_fee": self.included.units,
            "set_aside": self.states["set_aside"].units,
            "in_flight": self.in_flight_units,
        }
        parts["difference"] = parts["served"] - sum(v for k, v in parts.items() if k != "served")
        return parts

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "day": self.day,
            "served": self.served.to_json(with_batches=False),
            "served_counted": self.counted is not None,
            "recorded": self.recorded.to_json(with_batches=False),
            "queued": self.queued.to_json(with_batches=False),
            **{state: tally.to_json() for state, tally in self.states.items()},
            "billed_units": self.states["confirmed"].units - self.included.units,
            "in_flight_units": self.in_flight_units,
            "unbilled_units": self.unbilled_units,
            "unrecorded_units": self.unrecorded_units,
            "no_customer": self.no_customer.to_json(),
            "statement": self.statement(),
            "ok": self.ok,
        }


@dataclass
class Reconciliation:
    """The whole report: statements per tenant and period, the tenant days they are made
    from, set-aside batches, and unreadable queue records."""

    days: dict[tuple[str, str], TenantDay] = field(default_factory=dict)
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    unreadable_records: int = 0
    periods: PeriodStatements = field(default_factory=PeriodStatements)

    @property
    def ok(self) -> bool:
        return (
            self.unreadable_records == 0
            and all(day.ok for day in self.days.values())
            and all(s.unexplained == 0 for s in self.periods.statements.values())
        )

    def day(self, tenant_id: str, day: str) -> TenantDay:
        key = (tenant_id, day)
        if key not in self.days:
            self.days[key] = TenantDay(tenant_id, day)
        return self.days[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stripe_read": self.periods.read_stripe,
            "periods": [statement.to_json() for statement in self.periods.sorted()],
            "days": [self.days[key].to_json() for key in sorted(self.days)],
            "set_aside": self.set_aside,
            "unreadable_queue_records": self.unreadable_records,
        }


def reconcile(
    data_dir: Path,
    *,
    tenant_id: str | None = None,
    since: date | None = None,
    on_step: Callable[[str], None] = lambda step: None,
    invoices: Mapping[str, list[InvoicedPeriod]] | None = None,
) -> Reconciliation:
    """The report for `data_dir`, for one tenant or all, from day `since` (UTC) on;
    `on_step` hears each part as it is read (for a progress line). `invoices`: each tenant's
    Stripe invoices, when Stripe was read (`stripe_invoices`)."""
    report = Reconciliation()
    first_day = (since or date(1970, 1, 1)).isoformat()
    on_step("served counts")
    counted = _tally_counts(data_dir / "served", report, tenant_id, first_day)
    on_step("billing ledger")
    with read_only(data_dir / "node.sqlite") as conn:
        conn.execute("BEGIN")  # one snapshot for every query below
        report.periods = PeriodStatements.of(_known_periods(conn, tenant_id), invoices)
        if sqlite.has_table(conn, "billing_ledger"):  # absent until billing first ran
            _tally_ledger(conn, report, tenant_id, first_day)
            _tally_periods(conn, report.periods, tenant_id, first_day)
        planned = planned_through(conn)
        conn.execute("COMMIT")
    for directory in queue_directories(data_dir):
        on_step(f"queue {directory.name}")
        _tally_queue(directory, planned.get(directory.name, 0), report, tenant_id, first_day)
    if counted:
        for day in report.days.values():
            if day.counted is None:
                day.counted = Tally()
    report.periods.settle_served()
    for day in report.days.values():
        if day.unrecorded_units:
            report.periods.add_served(day.tenant_id, _epoch(day.day), day.unrecorded_units)
    return report


async def stripe_invoices(
    data_dir: Path, gateway: InvoiceGateway, event_name: str, *, tenant_id: str | None = None
) -> dict[str, list[InvoicedPeriod]]:
    """Each billed tenant's invoices (the tenants with a customer in the ledger), read from
    Stripe; raises the adapter's errors (TransientSyncError: try again later)."""
    with read_only(data_dir / "node.sqlite") as conn:
        customers = (
            conn.execute(
                "SELECT DISTINCT tenant_id, customer_id FROM billing_ledger"
                " WHERE customer_id IS NOT NULL AND (?1 IS NULL OR tenant_id = ?1)",
                (tenant_id,),
            ).fetchall()
            if sqlite.has_table(conn, "billing_ledger")
            else []
        )
    found: dict[str, list[InvoicedPeriod]] = {}
    for tenant, customer in customers:
        found.setdefault(tenant, []).extend(await gateway.invoiced_periods(customer, event_name))
    return found


class InvoiceGateway(Protocol):
    """What reconcile reads of Stripe (sync/stripe/gateway.py's StripeGateway)."""

    async def invoiced_periods(self, customer_id: str, event_name: str) -> list[InvoicedPeriod]: ...


def _known_periods(conn: sqlite3.Connection, tenant_id: str | None) -> list[tuple[str, int, int]]:
    if not sqlite.has_table(conn, "billing_periods"):
        return []
    rows = conn.execute(
        "SELECT tenant_id, period_start, period_end FROM billing_periods"
        " WHERE ?1 IS NULL OR tenant_id = ?1",
        (tenant_id,),
    )
    return [(str(t), int(start), int(end)) for t, start, end in rows]


def _tally_periods(
    conn: sqlite3.Connection, periods: PeriodStatements, tenant_id: str | None, first_day: str
) -> None:
    """Every batch by window, state, placement and stamp into its period's statement."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(billing_ledger)")}
    placed = "coalesce(placement, 'own')" if "placement" in columns else "'own'"
    stamp = "stamp" if "stamp" in columns else "NULL"
    included = f"substr(event_name, -{len(INCLUDED_SUFFIX)}) = '{INCLUDED_SUFFIX}'"
    for tenant, window_start, state, placement, stamped, units in conn.execute(
        f"SELECT tenant_id, window_start, state,"  # noqa: S608
        f" CASE WHEN {included} THEN 'included' ELSE {placed} END, {stamp}, sum(value)"
        " FROM billing_ledger WHERE (?1 IS NULL OR tenant_id = ?1) AND window_start >= ?2"
        " GROUP BY 1, 2, 3, 4, 5",
        (tenant_id, _epoch(first_day)),
    ):
        periods.add_batch(
            tenant, window_start, units, state=state, placement=placement, stamp=stamped
        )


def _tally_counts(
    directory: Path, report: Reconciliation, tenant_id: str | None, first_day: str
) -> bool:
    """Add the served counts of every worker; whether there were any counts files."""
    paths = sorted(directory.glob("*.counts"))
    for path in paths:
        for tenant, day_number, events, units in read_counts(path):
            day = date.fromordinal(date(1970, 1, 1).toordinal() + day_number).isoformat()
            if (tenant_id is None or tenant == tenant_id) and day >= first_day:
                tally = report.day(tenant, day)
                if tally.counted is None:
                    tally.counted = Tally()
                tally.counted.add(0, events, units)
    return bool(paths)


def _tally_ledger(
    conn: sqlite3.Connection, report: Reconciliation, tenant_id: str | None, first_day: str
) -> None:
    rows = conn.execute(
        "SELECT tenant_id, date(window_start, 'unixepoch') AS day, state, count(*),"
        " sum(events), sum(value) FROM billing_ledger"
        " WHERE (?1 IS NULL OR tenant_id = ?1) AND window_start >= ?2"
        " GROUP BY tenant_id, day, state",
        (tenant_id, _epoch(first_day)),
    ).fetchall()
    for tenant, day, state, batches, events, units in rows:
        report.day(tenant, day).states[state].add(batches, events, units)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(billing_ledger)")}
    # A ledger the daemon has not migrated yet stamped every batch with its window's start.
    placed = "coalesce(placement, 'own')" if "placement" in columns else "'own'"
    for tenant, day, placement, no_customer, batches, events, units in conn.execute(
        "SELECT tenant_id, date(window_start, 'unixepoch') AS day,"  # noqa: S608
        " CASE WHEN state != 'confirmed' THEN NULL"
        f" WHEN substr(event_name, -{len(INCLUDED_SUFFIX)}) = '{INCLUDED_SUFFIX}'"
        f" THEN 'included' ELSE {placed} END AS placement,"
        " state = 'planned' AND customer_id IS NULL AS no_customer,"
        " count(*), sum(events), sum(value) FROM billing_ledger"
        " WHERE (?1 IS NULL OR tenant_id = ?1) AND window_start >= ?2"
        " AND (state = 'confirmed' OR (state = 'planned' AND customer_id IS NULL))"
        " GROUP BY tenant_id, day, placement, no_customer",
        (tenant_id, _epoch(first_day)),
    ):
        tally = report.day(tenant, day)
        if no_customer:
            tally.no_customer.add(batches, events, units)
        elif placement == "included":
            tally.included.add(batches, events, units)
        else:
            tally.placements[placement].add(batches, events, units)
    for identifier, tenant, window_start, units, events, reason in conn.execute(
        "SELECT identifier, tenant_id, window_start, value, events, set_aside_reason"
        " FROM billing_ledger WHERE state = 'set_aside' AND (?1 IS NULL OR tenant_id = ?1)"
        " AND window_start >= ?2 ORDER BY window_start, tenant_id",
        (tenant_id, _epoch(first_day)),
    ):
        report.set_aside.append(
            {
                "identifier": identifier,
                "tenant_id": tenant,
                "window_start": _day_time(window_start),
                "units": units,
                "events": events,
                "reason": reason,
            }
        )


def _tally_queue(
    directory: Path,
    planned: int,
    report: Reconciliation,
    tenant_id: str | None,
    first_day: str,
) -> None:
    """Count the records after the last one planned (and after billing's cursor)."""
    for usage in unplanned(directory, planned):
        if isinstance(usage, NotAUsageEvent) or (day := _day(usage.timestamp_ms)) is None:
            report.unreadable_records += 1
        elif (tenant_id is None or usage.tenant_id == tenant_id) and day >= first_day:
            report.day(usage.tenant_id, day).queued.add(0, 1, usage.units)
            report.periods.add_queued(usage.tenant_id, usage.timestamp_ms / 1000, usage.units)


def _day(timestamp_ms: int) -> str | None:
    """The UTC day of a usage event; None for a time no calendar holds."""
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def _epoch(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def _day_time(seconds: int) -> str:
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
