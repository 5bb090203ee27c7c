"""Stripe events applied to node.sqlite: each event id once, in the transaction of its effect.

`webhook_events` holds every event id received with its outcome. The id is inserted in the
same transaction that changes the tenant, so an event is either applied and remembered or
neither: a redelivery (Stripe retries until it gets a 2xx, and may deliver twice anyway)
finds the id and changes nothing, and a crash between the two cannot happen.

An event that reports a billing period or an invoice's state records it in the same
transaction (edge_node/tenants/billing_periods.py); an invoice event's outcome is that of
its period (applied, stale or other_subscription).

The tenant is the one whose `stripe_customer_id` is the event's customer; failing that, the
one named by the event's `metadata.tenant_id`, as long as it is not linked to another
customer (provisioning sets that metadata before it records the customer id here).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.tenants.billing_periods import migrate as migrate_periods
from edge_node.tenants.billing_periods import record_period
from edge_node.tenants.standing import BillingEvent, Decision, Outcome, TenantBilling, decide

_TENANT_BILLING = (
    "SELECT tenant_id, status, stripe_customer_id, subscription_id, billing_event_created,"
    " subscription_event_created, past_due_since FROM tenants"
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of an event: its outcome, and whether it had been received before."""

    event_id: str
    outcome: Outcome
    tenant_id: str | None
    duplicate: bool

    def to_json(self) -> dict[str, object]:
        return {"event_id": self.event_id, "outcome": self.outcome, "duplicate": self.duplicate}


class TenantNotHereYet(Exception):
    """An event about a tenant this node does not know, young enough that the tenant may
    still sync down: not recorded, so that a redelivery can apply it."""


class BillingEventStore:
    """Applies Stripe events to the tenants in node.sqlite (the registry's connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        migrate_periods(conn)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The registry's connection (the thin events of the same endpoint use it too)."""
        return self._conn

    def apply(self, event: BillingEvent, *, hold_unknown_since: int | None = None) -> Receipt:
        """Record `event` and apply it, once: a second delivery is answered from the record.

        An event for no tenant here created at or after `hold_unknown_since` (Unix seconds)
        raises TenantNotHereYet and records nothing; older ones are recorded as
        unknown_tenant."""
        with sqlite.transaction(self._conn):
            seen = self._conn.execute(
                "SELECT outcome FROM webhook_events WHERE event_id = ?", (event.event_id,)
            ).fetchone()
            if seen is not None:
                return Receipt(event.event_id, seen[0], None, duplicate=True)
            tenant = self._tenant_of(event)
            if (
                tenant is None
                and event.target is not None
                and hold_unknown_since is not None
                and event.created >= hold_unknown_since
                and not self._exists(event.tenant_hint)
            ):
                raise TenantNotHereYet(event.event_id)
            decision = self.record(event, tenant, upload=True)
        return Receipt(
            event.event_id,
            decision.outcome,
            None if tenant is None else tenant.tenant_id,
            duplicate=False,
        )

    def record(
        self, event: BillingEvent, tenant: TenantBilling | None, *, upload: bool
    ) -> Decision:
        """(Inside a transaction, for an event not seen before.) Decide, apply, remember the
        event id; with `upload`, queue an event about a tenant for the central database, so
        every other edge applies it too (edge_node/tenants/shared_events.py)."""
        decision = decide(event, tenant)
        now = now_us()
        if tenant is not None and event.period is not None:
            kept = record_period(
                self._conn,
                tenant.tenant_id,
                tenant_subscription=tenant.subscription_id,
                event_id=event.event_id,
                created=event.created,
                facts=event.period,
                now_us=now,
            )
            if event.target is None:  # an invoice event: its period is all it changes
                decision = Decision(kept)
        if tenant is not None and decision.status is not None and decision.outcome == "applied":
            self._update(tenant.tenant_id, event, decision, now)
        elif tenant is not None and decision.advances:
            self._conn.execute(
                "UPDATE tenants SET billing_event_created ="
                " max(coalesce(billing_event_created, 0), ?) WHERE tenant_id = ?",
                (event.created, tenant.tenant_id),
            )
        tenant_id = None if tenant is None else tenant.tenant_id
        self._conn.execute(
            "INSERT INTO webhook_events (event_id, type, created, received_at, outcome, tenant_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (event.event_id, event.type, event.created, now, decision.outcome, tenant_id),
        )
        if upload and tenant_id is not None and event.target is not None:
            self._conn.execute(
                "INSERT INTO shared_billing_events (waiting_for, event_id, tenant_id, type,"
                " created, customer_id, subscription_id, target)"
                " VALUES ('upload', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (
                    event.event_id,
                    tenant_id,
                    event.type,
                    event.created,
                    event.customer_id,
                    event.subscription_id,
                    event.target,
                ),
            )
        return decision

    def seen(self, event_id: str) -> bool:
        return self.outcome(event_id) is not None

    def tenant(self, tenant_id: str) -> TenantBilling | None:
        """The billing columns of `tenant_id`, if it is here."""
        row = self._conn.execute(f"{_TENANT_BILLING} WHERE tenant_id = ?", (tenant_id,)).fetchone()
        return TenantBilling(*row) if row else None

    def outcome(self, event_id: str) -> str | None:
        row = self._conn.execute(
            "SELECT outcome FROM webhook_events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def _exists(self, tenant_id: str | None) -> bool:
        """Whether `tenant_id` names a tenant here (one linked to another customer: an event
        naming it will never apply, so it is not worth a redelivery)."""
        return tenant_id is not None and (
            self._conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
            is not None
        )

    def _tenant_of(self, event: BillingEvent) -> TenantBilling | None:
        if event.customer_id is not None:
            row = self._conn.execute(
                f"{_TENANT_BILLING} WHERE stripe_customer_id = ? ORDER BY created_at LIMIT 1",
                (event.customer_id,),
            ).fetchone()
            if row is not None:
                return TenantBilling(*row)
        if event.tenant_hint is not None:
            row = self._conn.execute(
                f"{_TENANT_BILLING} WHERE tenant_id = ?",
                (event.tenant_hint,),
            ).fetchone()
            if row is not None:
                tenant = TenantBilling(*row)
                if tenant.stripe_customer_id in (None, event.customer_id):
                    return tenant
        return None

    def _update(self, tenant_id: str, event: BillingEvent, decision: Decision, now: int) -> None:
        # A subscription event older than the newest invoice event may apply (billing_state):
        # billing_event_created only ever moves forward.
        self._conn.execute(
            "UPDATE tenants SET status = ?1, billing_status = ?1, past_due_since = ?2,"
            " billing_event_created = max(coalesce(billing_event_created, 0), ?3),"
            " subscription_event_created = CASE WHEN ?4 THEN ?5"
            " ELSE subscription_event_created END, updated_at = ?6 WHERE tenant_id = ?7",
            (
                decision.status,
                decision.past_due_since,
                event.created,
                not event.is_invoice,
                event.created,
                now,
                tenant_id,
            ),
        )
