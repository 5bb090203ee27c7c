"""A 500 on a provisioning or catalog create does not stall it for the 24 h Stripe replays it,
and never leads to a second object."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from edge_node.errors import TransientSyncError
from edge_node.tenants.registry import TenantRegistry
from sync.billing.provisioning import Provisioner
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.idempotency import RETIRE_AFTER_SECONDS, CreateKeys
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.stripe.conftest import METER_EVENT
from tests.sync.stripe.support import create_tenant


class NodeClock:
    """The node's wall clock, moved on by the test (the stand-in keeps its own)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> NodeClock:
    return NodeClock()


@pytest.fixture
async def keyed_gateway(
    standin: StripeStandin, node_database: sqlite3.Connection, clock: NodeClock
) -> AsyncIterator[StripeGateway]:
    """A gateway keeping its Idempotency-Key generations in node.sqlite, as the daemon's."""
    adapter = StripeGateway(
        lambda: DEFAULT_API_KEY,
        api_base=standin.url,
        timeout_seconds=10,
        create_keys=CreateKeys(node_database),
        clock=clock,
    )
    yield adapter
    await adapter.close()


def customers_of(standin: StripeStandin, tenant_id: str) -> list[str]:
    return [
        c["id"]
        for c in standin.account.customers.values()
        if c["metadata"].get("tenant_id") == tenant_id
    ]


@dataclass
class Provisioning:
    """A node's registry provisioned through the keyed gateway, against the stand-in."""

    standin: StripeStandin
    gateway: StripeGateway
    catalog: BillingCatalog
    node_database: sqlite3.Connection
    registry: TenantRegistry
    clock: NodeClock

    async def round(self) -> None:
        await Provisioner(self.gateway, self.registry, lambda: self.catalog).provision_all()


@pytest.fixture
def provisioning(
    standin: StripeStandin,
    keyed_gateway: StripeGateway,
    catalog: BillingCatalog,
    node_database: sqlite3.Connection,
    clock: NodeClock,
) -> Provisioning:
    return Provisioning(
        standin, keyed_gateway, catalog, node_database, TenantRegistry(node_database), clock
    )


class TestProvisioningCreates:
    async def test_a_500_on_the_customer_create_is_followed_by_a_new_key(
        self, provisioning: Provisioning
    ) -> None:
        """Stripe saves a 500 for the customer's Idempotency-Key and replays it; once a
        lookup finds no customer and a minute has passed, the next round creates it under a
        new key (recorded in node.sqlite first): one customer, within minutes, not a day."""
        tenant, _ = create_tenant(provisioning.registry, "acme")
        provisioning.standin.set_switches(fail=True, only="POST /v1/customers")
        with pytest.raises(TransientSyncError):
            await provisioning.round()
        provisioning.standin.set_switches(fail=False)
        with pytest.raises(TransientSyncError, match="new Idempotency-Key"):
            await provisioning.round()  # too soon: it may still run
        assert customers_of(provisioning.standin, tenant.tenant_id) == []
        provisioning.clock.offset += RETIRE_AFTER_SECONDS + 1
        await provisioning.round()
        link = provisioning.registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert customers_of(provisioning.standin, tenant.tenant_id) == [link.stripe_customer_id]
        assert link.subscription_id is not None
        keys = CreateKeys(provisioning.node_database)
        assert keys.key(f"customer:{tenant.tenant_id}").endswith(":g1")

    async def test_a_500_after_the_customer_was_made_finds_it_not_a_second(
        self, provisioning: Provisioning
    ) -> None:
        """Stripe made the customer and then answered 500, and its search index has not
        caught up: the customer is found by listing the customers created since the
        failure, so no new key and no second customer."""
        tenant, _ = create_tenant(provisioning.registry, "acme")
        provisioning.standin.set_switches(
            fail_after_work=True, search_lag=3600, only="POST /v1/customers"
        )
        with pytest.raises(TransientSyncError):
            await provisioning.round()
        [made] = customers_of(provisioning.standin, tenant.tenant_id)
        provisioning.standin.set_switches(fail_after_work=False)
        provisioning.clock.offset += RETIRE_AFTER_SECONDS + 1
        await provisioning.round()
        assert customers_of(provisioning.standin, tenant.tenant_id) == [made]
        link = provisioning.registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert link.stripe_customer_id == made
        assert (
            CreateKeys(provisioning.node_database).key(f"customer:{tenant.tenant_id}").count(":")
            == 2
        )

    async def test_a_500_on_the_subscription_create_is_followed_by_a_new_key(
        self, provisioning: Provisioning
    ) -> None:
        """The subscription likewise: after a replayed 500 and a consistent look at the
        customer's subscriptions, a new key makes the one subscription."""
        tenant, _ = create_tenant(provisioning.registry, "acme")
        provisioning.standin.set_switches(fail=True, only="POST /v1/subscriptions")
        with pytest.raises(TransientSyncError):
            await provisioning.round()
        provisioning.standin.set_switches(fail=False)
        provisioning.clock.offset += RETIRE_AFTER_SECONDS + 1
        await provisioning.round()
        link = provisioning.registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert list(provisioning.standin.account.subscriptions) == [link.subscription_id]


class TestCatalogCreates:
    async def test_a_500_on_a_price_create_is_finished_by_a_later_bootstrap(
        self, standin: StripeStandin, keyed_gateway: StripeGateway, clock: NodeClock
    ) -> None:
        """A price create answered 500 (saved and replayed for its key) is made under a new
        key by a bootstrap a minute later; every lookup key has one price."""
        standin.set_switches(fail=True, only="POST /v1/prices")
        with pytest.raises(TransientSyncError):
            await keyed_gateway.bootstrap(meter_event_name=METER_EVENT)
        standin.set_switches(fail=False)
        clock.offset += RETIRE_AFTER_SECONDS + 1
        catalog = await keyed_gateway.bootstrap(meter_event_name=METER_EVENT)
        lookup_keys = [p["lookup_key"] for p in standin.account.prices.values()]
        assert sorted(lookup_keys) == sorted(set(lookup_keys))
        assert len(lookup_keys) == len(catalog.price_ids) == 3
