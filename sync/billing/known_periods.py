"""The billing periods the node has read from Stripe, kept in node.sqlite per tenant.

The flush reads a customer's periods from Stripe when it stamps a batch
(sync/billing/periods.py); each reading is kept here, so that what must answer from local
state, never waiting on Stripe (the tenant's usage API, sync/billing/tenant_usage.py), knows
the current and the previous period and whether their invoices are final:

    period_start, period_end   the period, as the subscription item reported it
    finalizes_at               NULL: not known to have ended (the current period when read);
                               the draft invoice's `automatically_finalizes_at` once ended;
                               the time of a reading that no longer listed its draft (the
                               invoice was finalized by then)

A period is kept under the tenant of the batches billed to the customer (one customer, one
tenant). It owns the `billing_periods` component of node.sqlite; its table is read on any
connection, the read-only ones included.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge_node import sqlite
from sync.stripe.periods import SubscriptionPeriods

COMPONENT = "billing_periods"
MIGRATIONS = (
    """
    CREATE TABLE billing_periods (
        tenant_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        finalizes_at INTEGER,
        PRIMARY KEY (tenant_id, period_start)
    ) WITHOUT ROWID;
    """,
)


@dataclass(frozen=True, slots=True)
class KnownPeriod:
    """A period of a tenant's subscription [start, end), Unix seconds, and when its invoice is
    or was finalized (None: not known, the period had not ended when last read)."""

    start: int
    end: int
    finalizes_at: int | None

    def invoice_final(self, now: float) -> bool:
        return self.finalizes_at is not None and self.finalizes_at <= now


def migrate(conn: sqlite3.Connection) -> None:
    sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)


def record(
    conn: sqlite3.Connection, customer_id: str, periods: SubscriptionPeriods, now: float
) -> None:
    """Keep a reading of the customer's periods, taken at `now`."""
    (tenant_id,) = conn.execute(
        "SELECT coalesce((SELECT tenant_id FROM billing_ledger WHERE customer_id = ? LIMIT 1),"
        " (SELECT tenant_id FROM billing_periods WHERE customer_id = ? LIMIT 1))",
        (customer_id, customer_id),
    ).fetchone()
    if tenant_id is None:
        return
    rows: list[tuple[int, int, int | None]] = [(periods.period_start, periods.period_end, None)]
    # A subscription's first invoice covers no time (its period starts where it ends).
    rows += [
        (d.period_start, d.period_end, d.finalizes_at)
        for d in periods.drafts
        if d.period_end > d.period_start
    ]
    with sqlite.transaction(conn):
        for start, end, finalizes_at in rows:
            conn.execute(
                "INSERT INTO billing_periods"
                " (tenant_id, customer_id, period_start, period_end, finalizes_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, period_start) DO UPDATE"
                " SET period_end = excluded.period_end, customer_id = excluded.customer_id,"
                " finalizes_at = excluded.finalizes_at",
                (tenant_id, customer_id, start, end, finalizes_at),
            )
        drafts = [d.period_start for d in periods.drafts]
        marks = ", ".join("?" * len(drafts))
        conn.execute(
            "UPDATE billing_periods SET finalizes_at = ?"  # noqa: S608
            " WHERE tenant_id = ? AND period_end <= ? AND period_start NOT IN"
            f" ({marks}) AND (finalizes_at IS NULL OR finalizes_at > ?)",
            (int(now), tenant_id, periods.period_start, *drafts, int(now)),
        )


def ended_unread(conn: sqlite3.Connection, now: float) -> list[str]:
    """Customers with a period that has ended and has not been read since: the flush reads
    their periods again (sync/billing/flush.py), so their invoices are seen turning final
    even when no usage of theirs is sent any more."""
    rows = conn.execute(
        "SELECT DISTINCT customer_id FROM billing_periods"
        " WHERE period_end <= ? AND finalizes_at IS NULL ORDER BY customer_id",
        (int(now),),
    )
    return [str(customer) for (customer,) in rows]


def latest(conn: sqlite3.Connection, tenant_id: str, count: int = 2) -> list[KnownPeriod]:
    """The tenant's last `count` periods known, latest first ([] when none is, or the table
    does not exist yet: billing never ran here)."""
    if not sqlite.has_table(conn, "billing_periods"):
        return []
    rows = conn.execute(
        "SELECT period_start, period_end, finalizes_at FROM billing_periods"
        " WHERE tenant_id = ? ORDER BY period_start DESC LIMIT ?",
        (tenant_id, count),
    ).fetchall()
    return [KnownPeriod(*row) for row in rows]
