"""Provisioning: each tenant becomes exactly one Stripe customer with a subscription on its plan."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_node.config import load_config
from edge_node.errors import TransientSyncError
from edge_node.rating.store import TenantStores
from edge_node.tenants.model import TenantRecord
from edge_node.tenants.registry import TenantRegistry
from sync.backoff import Backoff
from sync.billing.jobs import stripe_jobs
from sync.billing.provisioning import Provisioner, ProvisioningReport
from sync.replication.round_values import EdgeStorage
from sync.stripe.catalog import BillingCatalog, save_catalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from sync.worker import SyncWorker
from tests.sync.stripe.support import create_tenant


def provisioner(
    gateway: StripeGateway, registry: TenantRegistry, catalog: BillingCatalog | None
) -> Provisioner:
    return Provisioner(gateway, registry, lambda: catalog)


def customers_of(standin: StripeStandin, tenant_id: str) -> list[str]:
    return [
        c["id"]
        for c in standin.account.customers.values()
        if c["metadata"].get("tenant_id") == tenant_id
    ]


async def wait_for(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


class TestProvisioning:
    async def test_a_tenant_becomes_a_customer_subscribed_to_its_plan(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """Each tenant gets a customer with metadata tenant_id and a subscription on its
        plan's price; both ids are stored in node.sqlite."""
        tenants = {plan: create_tenant(registry, plan, plan=plan)[0] for plan in catalog.price_ids}
        report = await provisioner(gateway, registry, catalog).provision_all()
        assert (report.customers, report.subscriptions) == (3, 3)
        for plan, tenant in tenants.items():
            link = registry.stripe_link(tenant.tenant_id)
            assert link is not None
            assert customers_of(standin, tenant.tenant_id) == [link.stripe_customer_id]
            assert link.subscription_id is not None
            subscription = standin.account.subscriptions[link.subscription_id]
            assert subscription["customer"] == link.stripe_customer_id
            assert subscription["items"]["data"][0]["price"]["id"] == catalog.price_ids[plan]
        assert registry.unprovisioned_tenants() == []

    async def test_a_provisioned_tenant_is_left_alone(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """Once both ids are stored, later rounds make no Stripe call at all."""
        create_tenant(registry, "acme")
        await provisioner(gateway, registry, catalog).provision_all()
        calls = sum(standin.calls.values())
        await provisioner(gateway, registry, catalog).provision_all()
        assert sum(standin.calls.values()) == calls

    async def test_stripe_down_then_back_makes_one_customer(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """While Stripe fails a round fails transiently and stores nothing; once it is back
        the next round provisions the tenant, with one customer."""
        tenant, _ = create_tenant(registry, "acme")
        standin.set_switches(fail=True)
        with pytest.raises(TransientSyncError):
            await provisioner(gateway, registry, catalog).provision_all()
        link = registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert (link.stripe_customer_id, link.subscription_id) == (None, None)
        standin.set_switches(fail=False)
        await provisioner(gateway, registry, catalog).provision_all()
        assert len(customers_of(standin, tenant.tenant_id)) == 1
        assert len(standin.account.subscriptions) == 1

    async def test_a_lost_answer_is_retried_without_a_second_customer(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """Stripe created the customer but the answer was lost: the next round finds that
        customer instead of making another, and the subscription likewise."""
        tenant, _ = create_tenant(registry, "acme")
        for only in ("POST /v1/customers", "POST /v1/subscriptions"):
            standin.set_switches(lose_answers=True, only=only)
            with pytest.raises(TransientSyncError):
                await provisioner(gateway, registry, catalog).provision_all()
        standin.set_switches(lose_answers=False)
        await provisioner(gateway, registry, catalog).provision_all()
        link = registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert customers_of(standin, tenant.tenant_id) == [link.stripe_customer_id]
        assert list(standin.account.subscriptions) == [link.subscription_id]

    async def test_two_provisioners_racing_make_one_customer(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
        tmp_path: Path,
    ) -> None:
        """The CLI and the daemon provisioning the same tenant at once both search before
        either creates; the shared Idempotency-Key makes the second create wait (409) or
        replay, never a second customer."""
        tenant, _ = create_tenant(registry, "acme")
        other_registry = TenantRegistry.open(tmp_path / "node")
        other = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url)
        standin.set_switches(latency=0.2)
        try:
            results = await asyncio.gather(
                provisioner(gateway, registry, catalog).provision_all(),
                provisioner(other, other_registry, catalog).provision_all(),
                return_exceptions=True,
            )
            assert all(isinstance(r, ProvisioningReport | TransientSyncError) for r in results)
            standin.set_switches(latency=0)
            await provisioner(gateway, registry, catalog).provision_all()
        finally:
            await other.close()
            other_registry.close()
        assert standin.calls["POST /v1/customers"] == 2
        assert len(customers_of(standin, tenant.tenant_id)) == 1
        assert len(standin.account.subscriptions) == 1

    async def test_without_a_catalog_customers_are_made_and_subscriptions_wait(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """Before bootstrap the customer is created and the round fails asking for
        `edge-node stripe bootstrap`; once the catalog exists the tenant is subscribed."""
        tenant, _ = create_tenant(registry, "acme")
        with pytest.raises(TransientSyncError, match="stripe bootstrap"):
            await provisioner(gateway, registry, None).provision_all()
        link = registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert link.stripe_customer_id is not None
        assert link.subscription_id is None
        await provisioner(gateway, registry, catalog).provision_all()
        assert registry.unprovisioned_tenants() == []

    async def test_a_tenant_stripe_refuses_does_not_hold_back_the_others(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """A tenant whose customer Stripe no longer knows is refused for good and reported;
        the next tenant is still provisioned."""
        broken, _ = create_tenant(registry, "broken")
        registry.set_stripe_customer(broken.tenant_id, "cus_deleted")
        fine, _ = create_tenant(registry, "fine")
        report = await provisioner(gateway, registry, catalog).provision_all()
        assert list(report.refused) == [broken.tenant_id]
        assert "resource_missing" in report.refused[broken.tenant_id]
        assert [t.tenant_id for t in registry.unprovisioned_tenants()] == [broken.tenant_id]
        assert len(customers_of(standin, fine.tenant_id)) == 1

    async def test_canceled_tenants_are_not_provisioned(
        self, standin: StripeStandin, gateway: StripeGateway, registry: TenantRegistry
    ) -> None:
        """A canceled tenant is not made a customer."""
        tenant, _ = create_tenant(registry, "gone")
        registry.set_status(tenant.tenant_id, "canceled")
        await provisioner(gateway, registry, None).provision_all()
        assert standin.account.customers == {}


class TestWithoutSearch:
    async def test_customers_are_found_by_a_list_bounded_by_the_tenants_creation(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """Where Stripe offers no search, a tenant's customer is looked for among the
        customers created since the tenant (less a margin), not among every customer the
        account ever made: one page, however many older customers there are."""
        standin.clock.advance(-2 * 86_400)
        for n in range(150):
            standin.account.create_customer({"name": f"old-{n}"})
        standin.clock.advance(2 * 86_400)
        standin.set_switches(search_disabled=True)
        tenant, _ = create_tenant(registry, "new")
        await provisioner(gateway, registry, catalog).provision_all()
        assert len(customers_of(standin, tenant.tenant_id)) == 1
        assert standin.calls["GET /v1/customers"] == 1


class TestRegistry:
    def test_ids_are_set_once(self, registry: TenantRegistry) -> None:
        """A stored customer or subscription id is never replaced by a later one."""
        tenant, _ = create_tenant(registry, "acme")
        assert registry.set_stripe_customer(tenant.tenant_id, "cus_1") == "cus_1"
        assert registry.set_stripe_customer(tenant.tenant_id, "cus_2") == "cus_1"
        assert registry.set_subscription(tenant.tenant_id, "sub_1") == "sub_1"
        assert registry.set_subscription(tenant.tenant_id, "sub_2") == "sub_1"

    def test_a_central_row_without_a_customer_keeps_the_local_one(
        self, registry: TenantRegistry
    ) -> None:
        """A tenant row downloaded from the central database with no Stripe customer (the
        central row is created without one) does not erase the customer provisioned here."""
        tenant, _ = create_tenant(registry, "acme")
        registry.set_stripe_customer(tenant.tenant_id, "cus_1")
        central = TenantRecord(
            tenant.tenant_id, "renamed", "active", "payg", None, None, tenant.created_at, 1
        )
        assert registry.apply_remote([central], []) == 1
        link = registry.stripe_link(tenant.tenant_id)
        assert link is not None
        assert (link.name, link.stripe_customer_id) == ("renamed", "cus_1")


class TestSyncWorker:
    async def test_the_worker_provisions_without_postgres_once_stripe_is_back(
        self,
        tmp_path: Path,
        standin: StripeStandin,
        catalog: BillingCatalog,
        node_database: sqlite3.Connection,
    ) -> None:
        """With Stripe configured and no central DSNs the worker runs only the provisioning
        job; it keeps retrying while Stripe fails and provisions the tenant once it answers,
        with one customer."""
        key_file = tmp_path / "stripe.key"
        key_file.write_text(DEFAULT_API_KEY)
        config = load_config(
            environ={},
            overrides={
                "data_dir": str(tmp_path / "node"),
                "node_id": "test-node",
                "stripe.api_key_file": str(key_file),
                "stripe.api_base": standin.url,
                "stripe.provisioning_interval_seconds": 0.05,
            },
        )
        save_catalog(tmp_path / "node" / "stripe-catalog.json", catalog)
        registry = TenantRegistry(node_database)
        tenant, _ = create_tenant(registry, "acme")
        standin.set_switches(fail=True)
        worker = SyncWorker(
            config.central,
            EdgeStorage(node_database, TenantStores(tmp_path / "tenants", node_id=config.node_id)),
            node_id=config.node_id,
            data_dir=config.data_path,
            backoff=Backoff(initial=0.02, maximum=0.1),
            jobs=stripe_jobs(config, node_database, lambda: DEFAULT_API_KEY),
        )
        worker.start()
        try:
            await wait_for(lambda: worker.job_status()[0].consecutive_failures >= 2)
            assert worker.job_status()[0].state == "retrying"
            standin.set_switches(fail=False)
            await wait_for(lambda: not registry.unprovisioned_tenants())
            await wait_for(lambda: worker.job_status()[0].state == "ok")
        finally:
            await worker.stop(grace=1)
        assert len(customers_of(standin, tenant.tenant_id)) == 1
        assert worker.job_status()[0].state == "stopped"
