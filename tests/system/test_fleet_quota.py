"""A tenant's `block` allowance held by three edge-node daemons sharing one PostgreSQL
(docs/quotas.md, "Several nodes"): each node leases slices of the allowance and spends them
locally. With every link up the fleet refuses no request before the allowance, less what
idle leases hold, is served; with one node's link to PostgreSQL cut for longer than a lease,
the fleet serves at most the allowance plus the overshoot bound the nodes export; and Stripe
bills exactly what was served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sync.postgres import connect
from tests.postgres import PostgresServer
from tests.system.cluster import Cluster, EdgeDaemon

ALLOWANCE = 100
PARTITION_UNITS = 2  # the plan's `local` partition allowance, on every node
LEASES = {
    "EDGE_NODE_QUOTAS_LEASE_SECONDS": "5",
    "EDGE_NODE_QUOTAS_LEASE_INTERVAL_SECONDS": "0.1",
    "EDGE_NODE_QUOTAS_LEASE_SHARE": "0.1",
    "EDGE_NODE_QUOTAS_LEASE_IDLE_SECONDS": "3",
    "EDGE_NODE_QUOTAS_PAYG_PARTITION_POLICY": "local",
    "EDGE_NODE_QUOTAS_PAYG_PARTITION_ALLOWANCE": str(PARTITION_UNITS),
}
BOUND = re.compile(r"^edge_node_quota_overshoot_bound_units (\S+)$", re.MULTILINE)
PACE_SECONDS = 0.02  # between one lane's requests


@dataclass
class Tenant:
    tenant_id: str
    api_key: str
    served: Counter[str] = field(default_factory=Counter)  # 2xx answers per node
    refused: Counter[str] = field(default_factory=Counter)  # problem slug per refusal


@dataclass
class Fleet:
    cluster: Cluster
    session: aiohttp.ClientSession
    bounds: dict[str, float] = field(default_factory=dict)  # highest exported, per node
    ids: int = 0

    async def rate(self, node: EdgeDaemon, tenant: Tenant) -> tuple[int, str]:
        """One billable request (a rating) to `node`: its status and problem slug."""
        self.ids += 1
        body = {"user_id": f"u{self.ids}", "item_id": "item", "score": 4}
        async with self.session.post(
            f"{node.url}/v1/tenants/{tenant.tenant_id}/ratings",
            json=body,
            headers={"X-API-Key": tenant.api_key},
        ) as answer:
            document = await answer.json(content_type=None)
        slug = "" if answer.status < 300 else str(document.get("type", "")).rsplit(":", 1)[-1]
        if answer.status < 300:
            tenant.served[node.node_id] += 1
        else:
            tenant.refused[slug] += 1
        return answer.status, slug

    async def exported_bounds(self) -> dict[str, float]:
        """Each node's `edge_node_quota_overshoot_bound_units` now."""
        bounds = {}
        for node in self.cluster.nodes:
            async with self.session.get(f"{node.url}/metrics") as answer:
                found = BOUND.search(await answer.text())
            assert found, f"{node.node_id} exports no overshoot bound"
            bounds[node.node_id] = float(found.group(1))
        return bounds

    async def watch_bounds(self, stop: asyncio.Event) -> None:
        """Each node's exported overshoot bound, read every 0.1 s: the highest seen counts."""
        while not stop.is_set():
            for node in self.cluster.nodes:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.session.get(f"{node.url}/metrics") as answer:
                        found = BOUND.search(await answer.text())
                if found:
                    value = float(found.group(1))
                    self.bounds[node.node_id] = max(self.bounds.get(node.node_id, 0), value)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def lane(self, node: EdgeDaemon, tenant: Tenant, until: float) -> None:
        while time.monotonic() < until:
            await self.rate(node, tenant)
            await asyncio.sleep(PACE_SECONDS)


async def _create_tenant(cluster: Cluster, name: str) -> Tenant:
    first = cluster.nodes[0]
    code, out, err = await first.cli(
        "tenants", "create", "--name", name, "--rate-limit", "10000000",
        "--email", f"billing+{name}@example.com",
        "--quota", str(ALLOWANCE), "--quota-policy", "block",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    return Tenant(created["tenant_id"], created["api_key"])


async def _reached_every_node(fleet: Fleet, tenant: Tenant) -> None:
    """Wait until every node knows the tenant (from PostgreSQL) and holds a lease of it."""
    deadline = time.monotonic() + 60
    for node in fleet.cluster.nodes:
        while True:
            url = f"{node.url}/v1/tenants/{tenant.tenant_id}/usage"
            async with fleet.session.get(url, headers={"X-API-Key": tenant.api_key}) as answer:
                if answer.status == 200:
                    break
            assert time.monotonic() < deadline, f"{tenant.tenant_id} never reached {node.node_id}"
            await asyncio.sleep(0.2)
    while await _central_leases(fleet.cluster, tenant) == {}:
        assert time.monotonic() < deadline, "no lease was ever claimed"
        await asyncio.sleep(0.1)


async def _central_leases(cluster: Cluster, tenant: Tenant) -> dict[str, tuple[int, int]]:
    connection = await connect(cluster.dsn)
    try:
        rows = await connection.fetch(
            "SELECT node_id, granted, spent FROM quota_leases WHERE tenant_id = $1",
            tenant.tenant_id,
        )
    finally:
        await connection.close()
    return {row["node_id"]: (int(row["granted"]), int(row["spent"])) for row in rows}


async def _billed(cluster: Cluster, tenant: Tenant) -> int:
    state: dict[str, Any] = await cluster.standin_state()
    customers = [
        c["id"]
        for c in state["customers"]
        if (c.get("metadata") or {}).get("tenant_id") == tenant.tenant_id
    ]
    return int(sum(state["billed"].get(c, 0) for c in customers))


async def _all_links_up(fleet: Fleet, tenant: Tenant) -> dict[str, int]:
    """Round-robin over the nodes, one request at a time, until the first refusal that says
    the allowance is used up: by then the fleet has served the allowance less what the
    nodes' leases hold unspent."""
    nodes = fleet.cluster.nodes
    unavailable = 0
    for turn in range(10 * ALLOWANCE):
        status, slug = await fleet.rate(nodes[turn % len(nodes)], tenant)
        unavailable += slug == "quota-unavailable"
        if slug == "quota-exhausted":
            leases = await _central_leases(fleet.cluster, tenant)
            unused = sum(max(0, granted - spent) for granted, spent in leases.values())
            served = sum(tenant.served.values())
            assert served >= ALLOWANCE - unused, (served, leases)
            assert served <= ALLOWANCE
            return {
                "served": served,
                "unused_leases": unused,
                "turns": turn + 1,
                "quota-unavailable": unavailable,
            }
        assert status < 300 or slug == "quota-unavailable", (status, slug)
    raise AssertionError(f"never refused after {sum(tenant.served.values())} served")


async def test_three_nodes_hold_a_tenant_to_its_allowance_with_one_link_cut(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    cluster = await Cluster.start(tmp_path / "fleet", postgres_server)
    for node in cluster.nodes:
        node.env.update(LEASES)
    stop = asyncio.Event()
    try:
        await cluster.start_daemons()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            fleet = Fleet(cluster, session)
            watching = asyncio.create_task(fleet.watch_bounds(stop))
            # 1. Every link up: no `quota-exhausted` before the allowance less unused leases.
            steady = await _create_tenant(cluster, "steady")
            await _reached_every_node(fleet, steady)
            figures = await _all_links_up(fleet, steady)

            # 2. The third node's link to PostgreSQL cut for 14 s (its 5 s lease lapses, and
            # the others take back what it did not report), all three serving throughout.
            cut = await _create_tenant(cluster, "cut")
            await _reached_every_node(fleet, cut)
            third = cluster.nodes[2]
            start = time.monotonic()
            lanes = [
                asyncio.create_task(fleet.lane(node, cut, start + 24)) for node in cluster.nodes
            ]
            await asyncio.sleep(0.5)
            await third.postgres.cut()
            # The bound of this cut: each node's figure once a claim in flight at the cut is
            # over (the cut-off node's no longer changes but for its partition units used).
            await asyncio.sleep(1)
            at_cut = await fleet.exported_bounds()
            await asyncio.sleep(13)
            await third.postgres.heal()
            await asyncio.gather(*lanes)
            stop.set()
            await watching
            # The usage API of a node shows the fleet's use, not only its own.
            first = cluster.nodes[0]
            async with session.get(
                f"{first.url}/v1/tenants/{cut.tenant_id}/usage",
                headers={"X-API-Key": cut.api_key},
            ) as answer:
                quota = (await answer.json())["quota"]
            assert quota["fleet"]["used_by_other_nodes"] > 0, quota
            assert (
                quota["used"] == cut.served[first.node_id] + quota["fleet"]["used_by_other_nodes"]
            )

        served = sum(cut.served.values())
        bound = sum(at_cut.values())
        # Every node reports its spend at its next claim (a refused node asks again every 5 s).
        deadline = time.monotonic() + 30
        leases = await _central_leases(cluster, cut)
        while sum(spent for _, spent in leases.values()) < served:
            assert time.monotonic() < deadline, f"spend never all reported: {leases}, {served}"
            await asyncio.sleep(0.5)
            leases = await _central_leases(cluster, cut)
        print(
            f"all links up: {figures}; one link cut: served {dict(cut.served)} = {served},"
            f" refused {dict(cut.refused)}, exported bounds at the cut {at_cut}"
            f" (highest over the run {fleet.bounds}),"
            f" central leases {leases}"
        )
        assert served <= ALLOWANCE + bound
        assert served >= ALLOWANCE - PARTITION_UNITS  # the fleet did use its allowance
        assert cut.served[third.node_id] > 0
        assert set(cut.refused) <= {"quota-exhausted", "quota-unavailable"}, cut.refused
        # Once healed, the third node reported everything it served, and no more.
        assert sum(spent for _, spent in leases.values()) == served
        assert leases[third.node_id][1] == cut.served[third.node_id]

        # Stripe bills exactly what was served, for both tenants.
        for tenant in (steady, cut):
            want = sum(tenant.served.values())
            deadline = time.monotonic() + 90
            while (billed := await _billed(cluster, tenant)) != want:
                assert time.monotonic() < deadline, f"billed {billed}, served {want}"
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await cluster.close()
