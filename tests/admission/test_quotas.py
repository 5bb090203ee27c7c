"""Plan allowances per billing period, enforced at admission over real HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import aiohttp

from edge_node.usage.quotas import calendar_month
from tests.conftest import NodeFactory
from tests.support import RunningNode, SigningKeys, Tenant, node_config, start_node

QUOTA_EXHAUSTED = "urn:edge-node:problem:quota-exhausted"


def create(node: RunningNode, plan: str = "payg", **quota: object) -> Tenant:
    tenant, key = node.storage.registry.create_tenant("acme", plan=plan, **quota)  # type: ignore[arg-type]
    return Tenant(tenant.tenant_id, key.api_key, key.key_id)


async def read(node: RunningNode, tenant: Tenant) -> aiohttp.ClientResponse:
    url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
    async with node.session.get(url, headers=tenant.headers) as response:
        await response.read()
        return response


async def statuses(node: RunningNode, tenant: Tenant, count: int) -> Counter[int]:
    responses = await asyncio.gather(*(read(node, tenant) for _ in range(count)))
    return Counter(response.status for response in responses)


def slow_fsync(fd: int) -> None:
    """An fsync slow enough that requests pile up in flight behind the group commit."""
    time.sleep(0.05)
    os.fsync(fd)


class TestBlockPolicy:
    async def test_the_allowance_is_served_then_429_quota_exhausted_until_the_period_ends(
        self, node: RunningNode
    ) -> None:
        """Three units served; the fourth is refused as a problem with Retry-After at the
        first of next month, UTC, and bills nothing."""
        tenant = create(node, quota=3, quota_policy="block")
        assert [(await read(node, tenant)).status for _ in range(3)] == [200] * 3
        url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
        async with node.session.get(url, headers=tenant.headers) as response:
            problem = await response.json()
            retry_after = int(response.headers["Retry-After"])
        assert response.status == 429
        assert problem["type"] == QUOTA_EXHAUSTED
        period_end = calendar_month(int(time.time() * 1000))[1] / 1000
        assert abs(retry_after - (period_end - time.time())) < 5
        assert node.meter.stats.recorded_units == 3

    async def test_requests_in_flight_together_never_pass_the_allowance(
        self, make_node: NodeFactory
    ) -> None:
        """Twenty requests at once against an allowance of five: exactly five are served."""
        node = await make_node(fsync=slow_fsync)
        tenant = create(node, quota=5, quota_policy="block")
        assert await statuses(node, tenant, 20) == {200: 5, 429: 15}
        assert node.meter.stats.recorded_units == 5


class TestOveragePolicy:
    async def test_usage_past_the_allowance_is_served_and_billed(self, node: RunningNode) -> None:
        """`overage` (the default) serves past the allowance and meters every unit."""
        tenant = create(node, quota=2)
        assert await statuses(node, tenant, 5) == {200: 5}
        assert node.meter.stats.recorded_units == 5


class TestPlanAllowances:
    async def test_a_plans_allowance_applies_unless_the_tenant_has_its_own(
        self, make_node: NodeFactory
    ) -> None:
        """`[quotas.flat]` limits flat tenants; a payg tenant (allowance 0: none) is not
        limited; a flat tenant's own quota replaces the plan's."""
        node = await make_node(**{"quotas.flat.allowance": 2, "quotas.flat.policy": "block"})
        flat, payg, own = create(node, "flat"), create(node, "payg"), create(node, "flat", quota=4)
        assert [(await read(node, flat)).status for _ in range(3)] == [200, 200, 429]
        assert await statuses(node, payg, 6) == {200: 6}
        assert [(await read(node, own)).status for _ in range(5)] == [200] * 4 + [429]

    async def test_operations_billing_no_units_are_never_limited(
        self, make_node: NodeFactory
    ) -> None:
        """An allowance counts billed units: a free operation neither spends nor is refused."""
        node = await make_node(**{"meter.units.score_read": 0})
        tenant = create(node, quota=1, quota_policy="block")
        assert await statuses(node, tenant, 4) == {200: 4}


class TestQuotaChanges:
    async def test_a_change_while_requests_are_in_flight_neither_refunds_nor_double_spends(
        self, make_node: NodeFactory
    ) -> None:
        """Lowered below what is in flight, the allowance lets those requests finish and
        spend is exactly what was served; raised again, exactly the difference is served."""
        node = await make_node(fsync=slow_fsync)
        tenant = create(node, quota=100, quota_policy="block")
        spend = node.meter.spend
        assert spend is not None
        in_flight = asyncio.gather(*(read(node, tenant) for _ in range(10)))
        await asyncio.sleep(0.02)
        node.storage.registry.set_quota(tenant.tenant_id, 3, "block")
        served = Counter(response.status for response in await in_flight)[200]
        assert spend.spent(tenant.tenant_id) == served == node.meter.stats.recorded_units
        assert (await read(node, tenant)).status == 429
        node.storage.registry.set_quota(tenant.tenant_id, served + 4, "block")
        assert await statuses(node, tenant, 10) == {200: 4, 429: 6}
        assert spend.spent(tenant.tenant_id) == served + 4

    async def test_spend_survives_a_restart(
        self, tmp_path: Path, signing_keys: SigningKeys
    ) -> None:
        """A restarted node reads what it served this period from its served counts."""
        config = node_config(tmp_path / "var", signing_keys)
        tenant = None
        for expected in ([200, 200], [200, 429]):
            node, runner = await start_node(config, signing_keys)
            try:
                tenant = tenant or create(node, quota=3, quota_policy="block")
                assert [(await read(node, tenant)).status for _ in range(2)] == expected
            finally:
                await node.session.close()
                await runner.cleanup()
                await node.meter.close()
                node.storage.close()
