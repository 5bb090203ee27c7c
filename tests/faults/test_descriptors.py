"""Few file descriptors: a daemon whose open-files limit is 256 (soft and hard) writes to 2,000
tenants, refuses with 503 rather than wedging where it runs short, and is healthy after."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path
from typing import Any

import aiohttp

from edge_node.node_database import open_node_database
from edge_node.sqlite import transaction
from edge_node.tenants.registry import TenantRegistry
from tests.faults.daemon import FaultNode

TENANTS = 2000
LIMIT = 256


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _create_tenants(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """Tenants and their keys, written straight into the registry (2,000 `tenants create`
    processes would take minutes); their rating files are made by the daemon's first write."""
    data_dir.mkdir(parents=True)
    conn = open_node_database(data_dir)
    registry = TenantRegistry(conn)
    created = []
    try:
        with transaction(conn):  # one commit, not 2,000 synced ones
            for n in range(count):
                tenant, key = registry.create_tenant(f"fd-{n}", rate_limit_per_minute=100_000_000)
                created.append({"tenant_id": tenant.tenant_id, "api_key": key.api_key})
    finally:
        registry.close()
    return created


async def _write_to_every_tenant(url: str, tenants: list[dict[str, Any]]) -> dict[int, int]:
    """One rating for each tenant from 32 concurrent clients; the count of each status."""
    statuses: dict[int, int] = {}
    todo = list(enumerate(tenants))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            while todo:
                n, tenant = todo.pop()
                try:
                    async with session.post(
                        f"{url}/v1/tenants/{tenant['tenant_id']}/ratings",
                        json={"user_id": f"u{n}", "item_id": "i", "score": 3},
                        headers={"X-API-Key": tenant["api_key"]},
                    ) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(client() for _ in range(32)))
    return statuses


class TestFewDescriptors:
    async def test_two_thousand_tenants_under_a_limit_of_256_leave_the_node_healthy(
        self, tmp_path: Path
    ) -> None:
        """Under `ulimit -n 256` (soft and hard), a write to each of 2,000 tenants: no 500, and
        afterwards /healthz and /readyz answer 200 and new writes are stored: the tenant-file
        cache fits the descriptor budget instead of exhausting it."""
        node = FaultNode(tmp_path / "data", tmp_path / "logs")
        tenants = _create_tenants(node.data_dir, TENANTS)
        try:
            url = node.serve(preexec_fn=_low_limit)
            statuses = await _write_to_every_tenant(url, tenants)
            print(statuses)
            assert node.alive(), node.log_text()[-3000:]
            assert set(statuses) <= {201, 503}, (statuses, node.log_text()[-3000:])
            assert statuses.get(201, 0) >= TENANTS * 0.9, statuses
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                for path in ("/healthz", "/readyz"):
                    async with session.get(url + path) as response:
                        assert response.status == 200, (path, await response.text())
            again = await _write_to_every_tenant(url, tenants[:200])
            assert again == {201: 200} or set(again) <= {200, 201}, again
            assert node.stop() == 0
            assert "Traceback" not in node.log_text()
        finally:
            node.kill()
