"""A tenant's billing email in Stripe: given at the customer's creation, every change pushed
by the sync worker's provisioning job, and required for invoices sent by email."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import stripe

from edge_node.errors import RegistryError, TransientSyncError
from edge_node.tenants.registry import TenantRegistry, unprovisioned
from sync.billing.provisioning import Provisioner, ProvisioningJob
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.stripe.support import create_tenant


def customer(standin: StripeStandin, registry: TenantRegistry, tenant_id: str) -> dict[str, Any]:
    link = registry.stripe_link(tenant_id)
    assert link is not None
    assert link.stripe_customer_id is not None
    return standin.account.customers[link.stripe_customer_id]


def updates(standin: StripeStandin) -> list[dict[str, Any]]:
    return [e for e in standin.account.events.events if e["type"] == "customer.updated"]


class TestCustomerEmail:
    async def test_the_customer_is_created_with_the_email_and_follows_its_changes(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """The customer is made with the tenant's address; a later address is pushed once
        (one `customer.updated`, the old address in its previous_attributes), then nothing
        is left to push."""
        tenant, _ = create_tenant(registry, "acme")
        provisioner = Provisioner(gateway, registry, lambda: catalog)
        await ProvisioningJob(provisioner, gateway, 1).run()
        assert customer(standin, registry, tenant.tenant_id)["email"] == "billing+acme@example.com"
        registry.contacts().set_email(tenant.tenant_id, "new@acme.example")
        await ProvisioningJob(provisioner, gateway, 1).run()
        await ProvisioningJob(provisioner, gateway, 1).run()
        assert customer(standin, registry, tenant.tenant_id)["email"] == "new@acme.example"
        (event,) = updates(standin)
        assert event["data"]["previous_attributes"] == {"email": "billing+acme@example.com"}
        assert registry.contacts().to_send() == []

    async def test_a_change_made_while_stripe_is_down_reaches_it_afterwards(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        tenant, _ = create_tenant(registry, "acme")
        provisioner = Provisioner(gateway, registry, lambda: catalog)
        await provisioner.provision_all()
        registry.contacts().set_email(tenant.tenant_id, "new@acme.example")
        standin.set_switches(fail=True)
        with pytest.raises(TransientSyncError):
            await provisioner.push_emails()
        assert registry.contacts().pending(tenant.tenant_id)
        standin.set_switches(fail=False)
        await provisioner.push_emails()
        assert customer(standin, registry, tenant.tenant_id)["email"] == "new@acme.example"
        assert not registry.contacts().pending(tenant.tenant_id)

    async def test_without_an_email_a_sent_invoice_subscription_is_refused_until_one_is_set(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
        node_database: sqlite3.Connection,
    ) -> None:
        """send_invoice (the default) with no address here nor in Stripe: the customer is
        made, the subscription refused with the reason recorded against the tenant; once an
        address is set the next rounds subscribe the tenant and give Stripe the address."""
        tenant, _ = registry.create_tenant("acme")
        provisioner = Provisioner(gateway, registry, lambda: catalog)
        report = await provisioner.provision_all()
        assert (report.customers, report.subscriptions) == (1, 0)
        assert "has no email" in report.refused[tenant.tenant_id]
        assert "tenants update" in report.refused[tenant.tenant_id]
        assert not standin.account.subscriptions
        (failing,) = [u for u in unprovisioned(node_database) if u.error]
        assert "send_invoice" in str(failing.error)
        registry.contacts().set_email(tenant.tenant_id, "billing@acme.example")
        await ProvisioningJob(provisioner, gateway, 1).run()
        assert registry.unprovisioned_tenants() == []
        assert customer(standin, registry, tenant.tenant_id)["email"] == "billing@acme.example"

    async def test_an_email_already_in_stripe_is_enough(
        self,
        standin: StripeStandin,
        gateway: StripeGateway,
        catalog: BillingCatalog,
        registry: TenantRegistry,
    ) -> None:
        """A customer given an address elsewhere (another node, the Dashboard) may be
        subscribed by a node that does not know the address."""
        tenant, _ = registry.create_tenant("acme")
        provisioner = Provisioner(gateway, registry, lambda: catalog)
        await provisioner.provision_all()
        await gateway.set_customer_email(
            customer(standin, registry, tenant.tenant_id)["id"], "elsewhere@acme.example"
        )
        report = await provisioner.provision_all()
        assert (report.subscriptions, report.refused) == (1, {})

    async def test_charge_automatically_needs_no_email(
        self, standin: StripeStandin, catalog: BillingCatalog, registry: TenantRegistry
    ) -> None:
        charging = StripeGateway(
            lambda: DEFAULT_API_KEY, api_base=standin.url, collection_method="charge_automatically"
        )
        try:
            registry.create_tenant("acme")
            report = await Provisioner(charging, registry, lambda: catalog).provision_all()
        finally:
            await charging.close()
        assert (report.subscriptions, report.refused) == (1, {})
        (subscription,) = standin.account.subscriptions.values()
        assert subscription["collection_method"] == "charge_automatically"

    def test_a_malformed_address_is_refused(self, registry: TenantRegistry) -> None:
        tenant, _ = registry.create_tenant("acme")
        for bad in ("", "acme", "a@b", "a b@c.d", "a@b.c" + "c" * 600):
            with pytest.raises(RegistryError, match="not an email address"):
                registry.contacts().set_email(tenant.tenant_id, bad)
        with pytest.raises(RegistryError, match="no tenant"):
            registry.contacts().set_email("nobody", "a@b.example")


class TestStandinCustomerUpdate:
    async def test_an_update_changes_the_fields_given_and_says_what_they_were(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """`POST /v1/customers/{id}`: the fields given change, "" unsets one, metadata
        merges; `customer.updated` carries the previous values; an unknown id is 404."""
        made = await client.v1.customers.create_async(
            {"name": "acme", "email": "a@acme.example", "metadata": {"k": "v"}}
        )
        updated = await client.v1.customers.update_async(
            made.id, {"email": "b@acme.example", "metadata": {"x": "y"}}
        )
        assert (updated.email, updated.name) == ("b@acme.example", "acme")
        assert updated.metadata.to_dict() == {"k": "v", "x": "y"}
        (event,) = updates(standin)
        assert event["data"]["previous_attributes"] == {
            "email": "a@acme.example",
            "metadata": {"k": "v"},
        }
        cleared = await client.v1.customers.update_async(made.id, {"email": ""})
        assert cleared.email is None
        with pytest.raises(stripe.InvalidRequestError) as missing:
            await client.v1.customers.update_async("cus_nothing", {"email": "a@b.example"})
        assert missing.value.http_status == 404
