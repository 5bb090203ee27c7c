"""A tenant Stripe will not provision is shown as such, in status, metrics and reconcile, and
recovers by itself once Stripe accepts it: then its usage held meanwhile is billed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from edge_node.metrics.node import NodeMetrics
from sync.billing.provisioning import Provisioner
from sync.billing.reconcile import reconcile
from sync.stripe.standin import StripeStandin
from tests.ops_support import Node
from tests.sync.billing.support import EVENT_NAME, BillingNode


def node_metrics(billing: BillingNode) -> NodeMetrics:
    metrics = NodeMetrics(CollectorRegistry())
    metrics.watch_tenants(billing.registry)
    return metrics


async def unprovisioned(metrics: NodeMetrics, state: str) -> float | None:
    await metrics.refresh()
    return metrics.registry.get_sample_value(
        "edge_node_stripe_unprovisioned_tenants", {"state": state}
    )


class TestProvisioningFailures:
    async def test_a_tenant_stripe_refuses_shows_as_failing_then_recovers(
        self, node: BillingNode, standin: StripeStandin, tmp_path: Path
    ) -> None:
        """While Stripe refuses customers, the tenant is `failing` in `edge-node status`
        (with the error and since when), in the metric, and its usage waits under
        `no_customer` in reconcile; once Stripe accepts, the next round provisions it, it
        leaves every list, and the usage it served meanwhile is billed."""
        catalog = await node.gateway.bootstrap(meter_event_name=EVENT_NAME)
        tenant = await node.tenant("refused", provisioned=False)
        await node.serve(tenant, 10)
        await node.consumer().run_until_settled()
        provisioner = Provisioner(node.gateway, node.registry, lambda: catalog)
        metrics = node_metrics(node)
        assert await unprovisioned(metrics, "pending") == 1
        standin.set_switches(refuse_customers=True)
        report = await provisioner.provision_all()
        assert tenant in report.refused
        assert await unprovisioned(metrics, "failing") == 1
        assert await unprovisioned(metrics, "pending") == 0
        (logs := tmp_path / "logs").mkdir()
        cli = Node(node.data_dir, logs)
        (shown,) = cli.status()["stripe"]["unprovisioned"]
        assert shown["tenant_id"] == tenant
        assert shown["state"] == "failing"
        assert shown["missing"] == ["customer", "subscription"]
        assert shown["failing_since"] is not None
        assert "HTTP 400" in shown["last_error"]
        table = cli.run("status").stdout
        assert f"tenant {tenant} (refused): provisioning failing for" in table
        (day,) = reconcile(node.data_dir, tenant_id=tenant).days.values()
        assert day.no_customer.units == 10
        assert day.statement()["in_flight"] == 10

        standin.set_switches(refuse_customers=False)
        await provisioner.provision_all()
        assert node.registry.provisioning_counts() == {"failing": 0, "pending": 0}
        assert await unprovisioned(metrics, "failing") == 0
        assert cli.status()["stripe"]["unprovisioned"] == []
        await node.consumer().run_until_settled()
        assert standin.billed(node.customer(tenant)) == 10
        (day,) = reconcile(node.data_dir, tenant_id=tenant).days.values()
        assert day.no_customer.units == 0
        assert day.statement()["difference"] == 0
