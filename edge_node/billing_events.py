"""Stripe events applied to node.sqlite: each event id once, in the transaction of its effect.

`webhook_events` holds every event id received with its outcome. The id is inserted in the
same transaction that changes the tenant, so an event is either applied and remembered or
neither: a redelivery (Stripe retries until it gets a 2xx, and may deliver twice anyway)
finds the id and changes nothing, and a crash between the two cannot happen.

The tenant is the one whose `stripe_customer_id` is the event's customer; failing that, the
one named by the event's `metadata.tenant_id`, as long as it is not linked to another
customer (provisioning sets that metadata before it records the customer id here).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.billing_state import BillingEvent, Decision, Outcome, TenantBilling, decide
from edge_node.clock import now_us

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
        self._conn = conn

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
            decision = decide(event, tenant)
            if (
                decision.outcome == "unknown_tenant"
                and hold_unknown_since is not None
                and event.created >= hold_unknown_since
                and not self._exists(event.tenant_hint)
            ):
                raise TenantNotHereYet(event.event_id)
            now = now_us()
            if tenant is not None and decision.outcome == "applied":
                self._update(tenant.tenant_id, event, decision, now)
            self._conn.execute(
                "INSERT INTO webhook_events"
                " (event_id, type, created, received_at, outcome, tenant_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.type,
                    event.created,
                    now,
                    decision.outcome,
                    None if tenant is None else tenant.tenant_id,
                ),
            )
        return Receipt(
            event.event_id,
            decision.outcome,
            None if tenant is None else tenant.tenant_id,
            duplicate=False,
        )

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
            "UPDATE tenants SET status = ?, past_due_since = ?,"
            " billing_event_created = max(coalesce(billing_event_created, 0), ?),"
            " subscription_event_created = CASE WHEN ? THEN ? ELSE subscription_event_created END,"
            " updated_at = ? WHERE tenant_id = ?",
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
