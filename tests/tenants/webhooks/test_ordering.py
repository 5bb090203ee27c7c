"""Events applied in every order they could arrive in end in the same tenant state."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node.node_database import open_node_database
from edge_node.tenants.registry import TenantRegistry
from edge_node.tenants.standing import parse_event
from edge_node.tenants.stripe_events import BillingEventStore
from tests.tenants.webhooks.conftest import invoice_event, subscription_event

T = 1_760_000_000


@pytest.fixture
def node_database(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_node_database(tmp_path)
    yield conn
    conn.close()


def final_status(
    node_database: sqlite3.Connection, events: list[dict[str, Any]], customer: str
) -> str:
    """A fresh tenant of `customer`, the events applied in the given order; its status."""
    registry = TenantRegistry(node_database)
    tenant, _ = registry.create_tenant(customer)
    registry.set_stripe_customer(tenant.tenant_id, customer)
    store = BillingEventStore(node_database)
    for event in events:
        store.apply(parse_event(event))
    found = registry.get_tenant(tenant.tenant_id)
    assert found is not None
    return found.status


def every_order(node_database: sqlite3.Connection, make: list[Any]) -> dict[tuple[str, ...], str]:
    """The final status for every order of the events `make` builds (one customer each)."""
    results = {}
    for number, order in enumerate(itertools.permutations(range(len(make)))):
        customer = f"cus_{number}"
        events = [make[i](f"evt_{number}_{i}", customer) for i in order]
        results[tuple(e["type"] + "@" + str(e["created"] - T) for e in events)] = final_status(
            node_database, events, customer
        )
    return results


def orders_ending_otherwise(
    node_database: sqlite3.Connection, make: list[Any], expected: str
) -> dict[tuple[str, ...], str]:
    """The orders of arrival (with their final status) that do not end in `expected`."""
    return {order: s for order, s in every_order(node_database, make).items() if s != expected}


class TestEveryOrder:
    def test_a_paid_final_invoice_never_revives_a_cancellation(
        self, node_database: sqlite3.Connection
    ) -> None:
        """A failure, the cancellation, then the final invoice paid: canceled in all 6 orders
        (compared with the newest event of any kind, invoice.paid arriving first would make
        the cancellation look stale and leave the tenant active)."""
        make = [
            lambda i, c: invoice_event(i, T, c, paid=False),
            lambda i, c: subscription_event(i, T + 10, c, deleted=True),
            lambda i, c: invoice_event(i, T + 20, c, paid=True),
        ]
        assert orders_ending_otherwise(node_database, make, "canceled") == {}

    def test_a_payment_after_a_failure_wins_in_either_order(
        self, node_database: sqlite3.Connection
    ) -> None:
        """Invoice events are ordered among themselves: paid after failed is active, however
        they arrive."""
        make = [
            lambda i, c: invoice_event(i, T, c, paid=False),
            lambda i, c: invoice_event(i, T + 10, c, paid=True),
        ]
        assert orders_ending_otherwise(node_database, make, "active") == {}

    def test_a_recovery_ends_active_in_all_24_orders(
        self, node_database: sqlite3.Connection
    ) -> None:
        """What Stripe sends for a failed payment later paid (invoice and subscription events
        for each step) ends active in every order of arrival."""
        make = [
            lambda i, c: invoice_event(i, T, c, paid=False),
            lambda i, c: subscription_event(i, T, c, "past_due"),
            lambda i, c: invoice_event(i, T + 3600, c, paid=True),
            lambda i, c: subscription_event(i, T + 3600, c, "active"),
        ]
        assert orders_ending_otherwise(node_database, make, "active") == {}

    def test_a_lapse_ends_canceled_in_all_24_orders(
        self, node_database: sqlite3.Connection
    ) -> None:
        """Failures, past_due, then unpaid and canceled: canceled in every order of arrival."""
        make = [
            lambda i, c: invoice_event(i, T, c, paid=False),
            lambda i, c: subscription_event(i, T, c, "past_due"),
            lambda i, c: invoice_event(i, T + 86400, c, paid=False),
            lambda i, c: subscription_event(i, T + 86400, c, deleted=True),
        ]
        assert orders_ending_otherwise(node_database, make, "canceled") == {}


def test_each_event_records_its_tenant(node_database: sqlite3.Connection) -> None:
    """webhook_events names the tenant an event was about (None when no tenant matched)."""
    final_status(node_database, [invoice_event("evt_1", T, "cus_a", paid=False)], "cus_a")
    BillingEventStore(node_database).apply(
        parse_event(invoice_event("evt_2", T, "cus_nobody", paid=False))
    )
    rows = node_database.execute(
        "SELECT w.event_id, t.stripe_customer_id FROM webhook_events w"
        " LEFT JOIN tenants t USING (tenant_id) ORDER BY w.event_id"
    ).fetchall()
    assert rows == [("evt_1", "cus_a"), ("evt_2", None)]
