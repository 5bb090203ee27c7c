"""A tenant's billing periods and invoices in node.sqlite: as the billing flush reads them from
Stripe, and as Stripe's webhooks report them. What must answer from local state, never waiting
on Stripe (the tenant's usage API, reconcile, `edge-node status`), reads them here.

Read from Stripe (`record_reading`, the `billing_periods` component): the flush reads a
customer's periods when it stamps a batch (sync/billing/periods.py) and keeps each reading:

    period_start, period_end   the period, as the subscription item reported it
    finalizes_at               NULL: not known to have ended (the current period when read);
                               the draft invoice's `automatically_finalizes_at` once ended;
                               the time of a reading that no longer listed its draft (the
                               invoice was finalized by then)

A period is kept under the tenant of the batches billed to the customer (one customer, one
tenant).

Reported by webhooks (`record_period`, the `tenant_periods` component):
`customer.subscription.updated` carries the subscription's items with their
`current_period_start`/`current_period_end` (a renewal moves them on);
`invoice.created` and `invoice.finalized` carry an invoice's `period_start`/`period_end`,
its `status` and, for a draft, `automatically_finalizes_at`. Each is recorded in the
transaction that records the event id (edge_node/tenants/stripe_events.py), so a
redelivery changes nothing, and only when it is newer than what is held: a later `created`,
or the same second and a state at least as far on (a later period; draft < open < paid,
void, uncollectible), so the outcome does not depend on the order events arrive in. An
event about another subscription than the tenant's is `other_subscription`. An invoice a
webhook reports past its draft makes its period's invoice final in `latest` before the next
reading says so.

The usage flush reads `changed_at` to know when a customer's periods moved since it last
read them from Stripe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_node import sqlite

READ_COMPONENT = "billing_periods"
READ_MIGRATIONS = (
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
COMPONENT = "tenant_periods"
MIGRATIONS = (
    """
    CREATE TABLE tenant_periods (
        tenant_id TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        event_created INTEGER NOT NULL,
        received_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE tenant_invoices (
        invoice_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        subscription_id TEXT,
        status TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        finalizes_at INTEGER,
        event_id TEXT NOT NULL,
        event_created INTEGER NOT NULL,
        received_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tenant_invoices_by_tenant ON tenant_invoices (tenant_id, period_start);
    """,
)
PERIOD_TYPES = ("customer.subscription.updated", "invoice.created", "invoice.finalized")
_INVOICE_RANK = {"draft": 0, "open": 1, "paid": 2, "void": 2, "uncollectible": 2}
PeriodOutcome = Literal["applied", "stale", "other_subscription"]


@dataclass(frozen=True, slots=True)
class PeriodFacts:
    """What an event says of a period: the subscription's current one, or an invoice's."""

    subscription_id: str | None
    period_start: int
    period_end: int
    invoice_id: str | None = None  # None: the subscription's current period
    status: str | None = None
    finalizes_at: int | None = None


def migrate(conn: sqlite3.Connection) -> None:
    sqlite.migrate(conn, READ_MIGRATIONS, component=READ_COMPONENT)
    sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)


def period_facts(
    event_type: str, obj: dict[str, Any], subscription_id: str | None
) -> PeriodFacts | None:
    """The period an event of `event_type` reports (None: none, or not readable)."""
    try:
        if event_type == "customer.subscription.updated":
            items = obj["items"]["data"]
            return PeriodFacts(
                subscription_id,
                min(_seconds(i["current_period_start"]) for i in items),
                max(_seconds(i["current_period_end"]) for i in items),
            )
        if event_type in ("invoice.created", "invoice.finalized"):
            status = obj["status"]
            if status not in _INVOICE_RANK or not isinstance(obj["id"], str):
                return None
            finalizes = obj.get("automatically_finalizes_at")
            return PeriodFacts(
                subscription_id,
                _seconds(obj["period_start"]),
                _seconds(obj["period_end"]),
                obj["id"],
                status,
                None if finalizes is None else _seconds(finalizes),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def record_period(
    conn: sqlite3.Connection,
    tenant_id: str,
    *,
    tenant_subscription: str | None,
    event_id: str,
    created: int,
    facts: PeriodFacts,
    now_us: int,
) -> PeriodOutcome:
    """(Inside the event's transaction.) Keep `facts` for the tenant when newer."""
    if facts.subscription_id and tenant_subscription not in (None, facts.subscription_id):
        return "other_subscription"
    if facts.invoice_id is None:
        changed = conn.execute(
            "INSERT INTO tenant_periods (tenant_id, subscription_id, period_start, period_end,"
            " event_id, event_created, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            " ON CONFLICT (tenant_id) DO UPDATE SET subscription_id = ?2, period_start = ?3,"
            " period_end = ?4, event_id = ?5, event_created = ?6, received_at = ?7"
            " WHERE ?6 > event_created OR (?6 = event_created AND ?3 >= period_start)",
            (
                tenant_id,
                facts.subscription_id or tenant_subscription or "",
                facts.period_start,
                facts.period_end,
                event_id,
                created,
                now_us,
            ),
        ).rowcount
        return "applied" if changed else "stale"
    changed = conn.execute(
        "INSERT INTO tenant_invoices (invoice_id, tenant_id, subscription_id, status,"
        " period_start, period_end, finalizes_at, event_id, event_created, received_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        " ON CONFLICT (invoice_id) DO UPDATE SET status = ?4, finalizes_at = ?7,"
        " event_id = ?8, event_created = ?9, received_at = ?10"
        " WHERE ?9 > event_created OR (?9 = event_created AND ?11 >= (CASE status"
        " WHEN 'draft' THEN 0 WHEN 'open' THEN 1 ELSE 2 END))",
        (
            facts.invoice_id,
            tenant_id,
            facts.subscription_id,
            facts.status,
            facts.period_start,
            facts.period_end,
            facts.finalizes_at,
            event_id,
            created,
            now_us,
            _INVOICE_RANK[facts.status or "draft"],
        ),
    ).rowcount
    return "applied" if changed else "stale"


@dataclass(frozen=True, slots=True)
class KnownInvoice:
    invoice_id: str
    status: str
    period_start: int
    period_end: int
    finalizes_at: int | None


class TenantPeriods:
    """The periods and invoices webhooks reported, on an open node.sqlite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        migrate(conn)
        self._conn = conn

    def current(self, tenant_id: str) -> tuple[int, int] | None:
        """The tenant's current period [start, end) as last reported, if one was."""
        row = self._conn.execute(
            "SELECT period_start, period_end FROM tenant_periods WHERE tenant_id = ?",
            (tenant_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def invoices(self, tenant_id: str) -> list[KnownInvoice]:
        rows = self._conn.execute(
            "SELECT invoice_id, status, period_start, period_end, finalizes_at"
            " FROM tenant_invoices WHERE tenant_id = ? ORDER BY period_start, invoice_id",
            (tenant_id,),
        ).fetchall()
        return [KnownInvoice(*row) for row in rows]

    def changed_at(self, customer_id: str) -> int:
        """When (microseconds) a webhook last changed the period or an invoice of the
        tenant whose customer is `customer_id`; 0 when none did."""
        row = self._conn.execute(
            "SELECT max(coalesce((SELECT max(received_at) FROM tenant_periods p"
            " WHERE p.tenant_id = t.tenant_id), 0), coalesce((SELECT max(received_at)"
            " FROM tenant_invoices i WHERE i.tenant_id = t.tenant_id), 0))"
            " FROM tenants t WHERE t.stripe_customer_id = ?",
            (customer_id,),
        ).fetchone()
        return int(row[0] or 0) if row else 0


@dataclass(frozen=True, slots=True)
class KnownPeriod:
    """A period of a tenant's subscription [start, end), Unix seconds, and when its invoice is
    or was finalized (None: not known, the period had not ended when last read)."""

    start: int
    end: int
    finalizes_at: int | None

    def invoice_final(self, now: float) -> bool:
        return self.finalizes_at is not None and self.finalizes_at <= now


def record_reading(
    conn: sqlite3.Connection,
    customer_id: str,
    current: tuple[int, int],
    drafts: Sequence[tuple[int, int, int | None]],
    now: float,
) -> None:
    """Keep a reading of the customer's periods taken at `now`: the current period and each
    draft invoice's (start, end, finalizes at)."""
    (tenant_id,) = conn.execute(
        "SELECT coalesce((SELECT tenant_id FROM billing_ledger WHERE customer_id = ? LIMIT 1),"
        " (SELECT tenant_id FROM billing_periods WHERE customer_id = ? LIMIT 1))",
        (customer_id, customer_id),
    ).fetchone()
    if tenant_id is None:
        return
    rows: list[tuple[int, int, int | None]] = [(*current, None)]
    # A subscription's first invoice covers no time (its period starts where it ends).
    rows += [(start, end, finalizes) for start, end, finalizes in drafts if end > start]
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
        starts = [start for start, _, _ in drafts]
        marks = ", ".join("?" * len(starts))
        conn.execute(
            "UPDATE billing_periods SET finalizes_at = ?"  # noqa: S608
            " WHERE tenant_id = ? AND period_end <= ? AND period_start NOT IN"
            f" ({marks}) AND (finalizes_at IS NULL OR finalizes_at > ?)",
            (int(now), tenant_id, current[0], *starts, int(now)),
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
    does not exist yet: billing never ran here). An invoice a webhook reported past its draft
    makes its period's invoice final from the event's time."""
    if not sqlite.has_table(conn, "billing_periods"):  # made with tenant_invoices (migrate)
        return []
    rows = conn.execute(
        "SELECT p.period_start, p.period_end,"
        " min(coalesce(p.finalizes_at, f.at), coalesce(f.at, p.finalizes_at))"
        " FROM billing_periods p LEFT JOIN (SELECT period_start, min(event_created) AS at"
        "   FROM tenant_invoices WHERE tenant_id = ?1 AND status != 'draft'"
        "   GROUP BY period_start) f ON f.period_start = p.period_start"
        " WHERE p.tenant_id = ?1 ORDER BY p.period_start DESC LIMIT ?2",
        (tenant_id, count),
    ).fetchall()
    return [KnownPeriod(*row) for row in rows]


def _seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a timestamp: {value!r}")
    return int(value)
