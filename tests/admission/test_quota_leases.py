"""A fleet-wide `block` allowance at admission, over real HTTP: a node with a central database
serves a tenant within the lease its sync worker wrote to leases.sqlite, and refuses past it
with 503 `quota-unavailable` or, when the fleet has nothing left, 429 `quota-exhausted`."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from edge_node import clock
from edge_node.usage.leases import Lease, boot_id, boottime_ns, open_leases, write_leases
from edge_node.usage.quotas import calendar_month
from tests.conftest import NodeFactory
from tests.support import RunningNode, Tenant

QUOTA_EXHAUSTED = "urn:edge-node:problem:quota-exhausted"
QUOTA_UNAVAILABLE = "urn:edge-node:problem:quota-unavailable"
# Never reached: the node only reads the leases file, which the tests write as the sync
# worker would.
CENTRAL = {"central.dsns": ["postgresql://edge@127.0.0.1:9/central"]}
BOOK_REFRESH_SECONDS = 0.02  # past the request path's check of the leases file (10 ms)


@pytest.fixture
async def node(make_node: NodeFactory) -> RunningNode:
    return await make_node(**CENTRAL)


def create(node: RunningNode, quota: int = 100, policy: str = "block") -> Tenant:
    tenant, key = node.storage.registry.create_tenant("acme", quota=quota, quota_policy=policy)  # type: ignore[arg-type]
    return Tenant(tenant.tenant_id, key.api_key, key.key_id)


def lease(node: RunningNode, tenant: Tenant, granted: int, **changes: object) -> Lease:
    """Write a live lease of `granted` units of 100 for `tenant` into the node's leases.sqlite,
    as its sync worker would; 40 units spent by the other nodes, unless `changes` say else."""
    written = Lease(
        tenant.tenant_id,
        calendar_month(clock.now_ms())[0],
        100,
        granted,
        0,
        40,
        False,
        boottime_ns() + 60 * 10**9,
        boot_id(),
        False,
        0,
    )._replace(**changes)  # type: ignore[arg-type]
    conn = open_leases(node.config.data_path)
    try:
        write_leases(conn, [written])
    finally:
        conn.close()
    return written


async def read(node: RunningNode, tenant: Tenant) -> tuple[int, dict[str, str], dict[str, str]]:
    """GET a score: the status, the headers, and the problem's body if refused."""
    url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
    async with node.session.get(url, headers=tenant.headers) as response:
        body = await response.json() if response.status >= 400 else {}
        return response.status, dict(response.headers), body


def period_remaining(headers: dict[str, str]) -> int:
    """The `r` of the RateLimit field's `period` policy: units of the allowance left."""
    found = re.search(r'"period";r=(\d+)', headers["RateLimit"])
    assert found is not None, headers["RateLimit"]
    return int(found.group(1))


class TestWithinALease:
    async def test_a_lease_is_served_and_what_is_left_counts_the_other_nodes_spend(
        self, node: RunningNode
    ) -> None:
        """Two units granted: both are served, and of the allowance of 100 the answer says
        59 then 58 are left (the other nodes have spent 40)."""
        tenant = create(node)
        lease(node, tenant, 2)
        answers = [await read(node, tenant) for _ in range(2)]
        assert [status for status, _, _ in answers] == [200, 200]
        assert [period_remaining(headers) for _, headers, _ in answers] == [59, 58]
        assert node.meter.stats.recorded_units == 2

    async def test_a_tenant_without_a_block_allowance_needs_no_lease(
        self, node: RunningNode
    ) -> None:
        """An `overage` allowance is each node's own: served with no lease at all."""
        tenant = create(node, quota=1, policy="overage")
        assert [(await read(node, tenant))[0] for _ in range(3)] == [200, 200, 200]


class TestPastALease:
    async def test_a_spent_lease_is_answered_503_quota_unavailable_until_renewed(
        self, node: RunningNode
    ) -> None:
        """The fleet has units left, this node has none just now: 503 with Retry-After 1,
        nothing billed, the period's units left still shown; a renewal serves again."""
        tenant = create(node)
        lease(node, tenant, 1)
        assert (await read(node, tenant))[0] == 200
        status, headers, problem = await read(node, tenant)
        assert (status, problem["type"], headers["Retry-After"]) == (503, QUOTA_UNAVAILABLE, "1")
        assert period_remaining(headers) == 59
        assert node.meter.stats.recorded_units == 1
        lease(node, tenant, 2, node_spent=1, fleet_spent=41)
        await asyncio.sleep(BOOK_REFRESH_SECONDS)
        assert (await read(node, tenant))[0] == 200

    async def test_no_lease_yet_is_503_quota_unavailable(self, node: RunningNode) -> None:
        """Before the sync worker's first claim the node holds nothing of the allowance."""
        tenant = create(node)
        status, headers, problem = await read(node, tenant)
        assert (status, problem["type"], headers["Retry-After"]) == (503, QUOTA_UNAVAILABLE, "1")
        assert node.meter.stats.recorded_units == 0

    async def test_a_spent_lease_of_an_exhausted_fleet_is_429_quota_exhausted(
        self, node: RunningNode
    ) -> None:
        """The central database had nothing more to give: 429 with Retry-After at the end of
        the period, as a standalone node answers past its allowance."""
        tenant = create(node)
        lease(node, tenant, 1, exhausted=True, fleet_spent=99)
        assert (await read(node, tenant))[0] == 200
        status, headers, problem = await read(node, tenant)
        assert (status, problem["type"]) == (429, QUOTA_EXHAUSTED)
        period_end = calendar_month(int(time.time() * 1000))[1] / 1000
        assert abs(int(headers["Retry-After"]) - (period_end - time.time())) < 5
        assert node.meter.stats.recorded_units == 1
