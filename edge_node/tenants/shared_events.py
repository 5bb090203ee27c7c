"""Stripe billing events shared between edges through the central database (node.sqlite side).

A webhook reaches one node. That node applies the event and, in the same transaction, queues
it in `shared_billing_events`, waiting for `upload` (edge_node/tenants/stripe_events.py). The sync
worker uploads what waits to the central `billing_events` table and downloads the events
other nodes uploaded (sync/replication/billing_events.py); each is applied here through the very
rule a webhook follows, once per event id (`webhook_events`). The rule's outcome does not depend
on the order events arrive in (tests/tenants/webhooks/test_ordering.py), so every edge converges on
the state one node receiving every event would reach, and an event never undoes a newer one.

An event downloaded for a tenant this node does not hold yet waits in the same table (for
its `tenant`) and is applied once the tenant arrives (the registry download of a later
round), so no event is lost to the order in which rows reach this node.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.node_database import write_value
from edge_node.tenants.model import TenantStatus
from edge_node.tenants.standing import BillingEvent
from edge_node.tenants.stripe_events import BillingEventStore

_COLUMNS = "event_id, tenant_id, type, created, customer_id, subscription_id, target"


@dataclass(frozen=True, slots=True)
class SharedBillingEvent:
    """A billing event as it travels between edges: whose it is and what it asks for."""

    event_id: str
    tenant_id: str
    type: str
    created: int
    customer_id: str | None
    subscription_id: str | None
    target: TenantStatus

    def as_event(self) -> BillingEvent:
        return BillingEvent(
            event_id=self.event_id,
            type=self.type,
            created=self.created,
            customer_id=self.customer_id,
            tenant_hint=self.tenant_id,
            subscription_id=self.subscription_id,
            target=self.target,
        )


class BillingReplica:
    """This node's side of billing event replication, on the registry's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._store = BillingEventStore(conn)

    def pending_uploads(self) -> list[SharedBillingEvent]:
        """Events applied here and not uploaded yet, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM shared_billing_events"  # noqa: S608
            " WHERE waiting_for = 'upload' ORDER BY created, event_id"
        ).fetchall()
        return [SharedBillingEvent(*row) for row in rows]

    def acknowledge_uploads(self, events: Sequence[SharedBillingEvent]) -> None:
        """Drop uploaded events from the outbox (once the central COMMIT is done)."""
        with sqlite.transaction(self._conn):
            self._conn.executemany(
                "DELETE FROM shared_billing_events WHERE event_id = ? AND waiting_for = 'upload'",
                [(event.event_id,) for event in events],
            )

    def apply_downloaded(
        self, events: Sequence[SharedBillingEvent], *, checkpoint: tuple[str, str] | None = None
    ) -> int:
        """Apply events from the central database (and store `checkpoint`), in one
        transaction; how many changed a tenant. Events already seen change nothing; events
        of a tenant not here wait for it."""
        applied = 0
        with sqlite.transaction(self._conn):
            for event in events:
                applied += self._apply(event)
            if checkpoint is not None:
                write_value(self._conn, *checkpoint)
        return applied

    def apply_waiting(self) -> int:
        """Apply the waiting events whose tenant has arrived since; how many changed one."""
        rows = self._conn.execute(
            "SELECT w.event_id, w.tenant_id, w.type, w.created, w.customer_id,"
            " w.subscription_id, w.target"
            " FROM shared_billing_events w JOIN tenants t ON t.tenant_id = w.tenant_id"
            " WHERE w.waiting_for = 'tenant' ORDER BY w.created, w.event_id"
        ).fetchall()
        if not rows:
            return 0
        waiting = [SharedBillingEvent(*row) for row in rows]
        with sqlite.transaction(self._conn):
            self._conn.executemany(
                "DELETE FROM shared_billing_events WHERE event_id = ? AND waiting_for = 'tenant'",
                [(event.event_id,) for event in waiting],
            )
            return sum(self._apply(event) for event in waiting)

    def _apply(self, shared: SharedBillingEvent) -> int:
        if self._store.seen(shared.event_id):
            return 0
        tenant = self._store.tenant(shared.tenant_id)
        if tenant is None:
            self._conn.execute(
                f"INSERT INTO shared_billing_events (waiting_for, {_COLUMNS})"  # noqa: S608
                " VALUES ('tenant', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (
                    shared.event_id,
                    shared.tenant_id,
                    shared.type,
                    shared.created,
                    shared.customer_id,
                    shared.subscription_id,
                    shared.target,
                ),
            )
            return 0
        decision = self._store.record(shared.as_event(), tenant, upload=False)
        return int(decision.outcome == "applied")
