"""API-key credits at admission over real HTTP: spent per billable unit, refused at zero."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from edge_node.tenants.model import KeyCredits
from tests.conftest import NodeFactory
from tests.support import RunningNode, Tenant, ratelimit_fields
from tests.usage.test_meter import FailingFsync

CREDITS_EXHAUSTED = "urn:edge-node:problem:credits-exhausted"


def credit_key(node: RunningNode, tenant: Tenant, grant: KeyCredits) -> dict[str, str]:
    issued = node.storage.registry.create_key(tenant.tenant_id, "admin", grant)
    return {"X-API-Key": issued.api_key}


@contextlib.contextmanager
def credits_locked(node: RunningNode) -> Iterator[None]:
    """credits.sqlite's write lock held by another connection (another process's) meanwhile."""
    other = sqlite3.connect(node.config.data_path / "credits.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def read(
    node: RunningNode, tenant: Tenant, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
    async with node.session.get(url, headers=headers) as response:
        await response.read()
        return response


class TestCredits:
    async def test_a_key_serves_its_credits_then_429_credits_exhausted(
        self, node: RunningNode
    ) -> None:
        """Three credits: three reads, counting down in RateLimit; the fourth is refused as a
        problem, billed nothing; the tenant's other keys are not limited."""
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(3))
        responses = [await read(node, tenant, headers) for _ in range(3)]
        assert [r.status for r in responses] == [200] * 3
        assert [ratelimit_fields(r.headers)["credits"]["r"] for r in responses] == [2, 1, 0]
        policy = ratelimit_fields(responses[0].headers, "RateLimit-Policy")
        assert policy["credits"] == {"q": 3}
        url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
        async with node.session.get(url, headers=headers) as refused:
            assert refused.status == 429
            assert (await refused.json())["type"] == CREDITS_EXHAUSTED
        assert node.meter.stats.recorded_units == 3
        assert (await read(node, tenant, tenant.headers)).status == 200

    async def test_a_request_that_bills_nothing_spends_nothing(self, node: RunningNode) -> None:
        """A delete of a rating that does not exist (404) gives its credit back."""
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(1))
        url = node.tenant_url(tenant.tenant_id, f"/ratings/{uuid.uuid4()}")
        async with node.session.delete(url, headers=headers) as missing:
            assert missing.status == 404
        assert (await read(node, tenant, headers)).status == 200
        assert (await read(node, tenant, headers)).status == 429

    async def test_a_refilled_key_says_when_it_refills(self, node: RunningNode) -> None:
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(1, refill=5, refill_every_seconds=3600))
        await read(node, tenant, headers)
        refused = await read(node, tenant, headers)
        assert refused.status == 429
        current = ratelimit_fields(refused.headers)["credits"]
        assert current["r"] == 0
        assert 3590 <= current["t"] == int(refused.headers["Retry-After"])
        policy = ratelimit_fields(refused.headers, "RateLimit-Policy")
        assert policy["credits"] == {"q": 5, "w": 3600}


class TestCreditsWhenStorageFails:
    async def test_a_request_whose_usage_is_pending_keeps_its_credit_spent(
        self, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A request carried out whose usage event waits for the disk (503 usage-pending)
        will be billed once written: its credit is not given back."""
        monkeypatch.setattr("edge_node.usage.meter.USAGE_WAIT_SECONDS", 0.3)
        fsync = FailingFsync()
        node = await make_node(fsync=fsync)
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(2))
        assert (await read(node, tenant, headers)).status == 200
        fsync.broken = True
        assert (await read(node, tenant, headers)).status == 503
        fsync.broken = False
        for _ in range(100):  # the queue retries the write by itself
            if node.meter.queue is not None and node.meter.queue.write_failure is None:
                break
            await asyncio.sleep(0.05)
        refused = await read(node, tenant, headers)
        assert refused.status == 429, await refused.text()


class TestCreditsFileBusy:
    async def test_credits_locked_by_another_process_is_503_not_500(
        self, node: RunningNode
    ) -> None:
        """Another process holding credits.sqlite's write lock past the short wait: the request
        is refused 503 `storage-unavailable` with Retry-After, nothing spent or served, and
        served once the lock is gone."""
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(3))
        assert (await read(node, tenant, headers)).status == 200
        with credits_locked(node):
            url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
            async with node.session.get(url, headers=headers) as refused:
                assert refused.status == 503
                assert refused.headers["Retry-After"]
                problem = await refused.json()
                assert problem["type"] == "urn:edge-node:problem:storage-unavailable"
        served = await read(node, tenant, headers)
        assert served.status == 200
        assert ratelimit_fields(served.headers)["credits"]["r"] == 1


class TestCreditsFileLockedAMoment:
    async def test_a_spend_waits_for_another_process_without_stopping_the_node(
        self, node: RunningNode
    ) -> None:
        """Another process holding credits.sqlite's write lock for a moment: the request
        waits for it while the node goes on serving (its loop is not asleep in SQLite's busy
        handler), and is served, its unit spent, once the lock is free."""
        tenant = node.create_tenant()
        headers = credit_key(node, tenant, KeyCredits(3))
        assert (await read(node, tenant, headers)).status == 200
        with credits_locked(node):
            waiting = asyncio.ensure_future(read(node, tenant, headers))
            await asyncio.sleep(0.05)  # the node's loop (this one) runs meanwhile
            assert not waiting.done()
        served = await waiting
        assert served.status == 200
        assert ratelimit_fields(served.headers)["credits"]["r"] == 1
