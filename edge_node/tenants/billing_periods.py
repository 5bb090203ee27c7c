"""A tenant's billing period and invoices as Stripe's webhooks report them, in node.sqlite.

`customer.subscription.updated` carries the subscription's items with their
`current_period_start`/`current_period_end` (a renewal moves them on);
`invoice.created` and `invoice.finalized` carry an invoice's `period_start`/`period_end`,
its `status` and, for a draft, `automatically_finalizes_at`. Each is recorded in the
transaction that records the event id (edge_node/tenants/stripe_events.py), so a
redelivery changes nothing, and only when it is newer than what is held: a later `created`,
or the same second and a state at least as far on (a later period; draft < open < paid,
void, uncollectible), so the outcome does not depend on the order events arrive in. An
event about another subscription than the tenant's is `other_subscription`.

The usage flush reads `changed_at` to know when a customer's periods moved since it last
read them from Stripe (sync/billing/periods.py); `edge-node status` and reconcile can read
the period and invoices without calling Stripe.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from edge_node import sqlite

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


def _seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a timestamp: {value!r}")
    return int(value)
