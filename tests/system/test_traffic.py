"""The load's own judgements: a rating whose answer is still on the way already counts in
the scores other lanes read, and that is not a cross-tenant leak."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from aiohttp import web

from tests.fault_proxy import TcpProxy
from tests.system.cluster import Cluster, EdgeDaemon
from tests.system.record import Observations
from tests.system.traffic import ApiKey, TenantClients, Traffic

TENANT = "7d4c55a1-0000-4000-8000-000000000001"


async def test_a_score_counting_a_rating_whose_answer_has_not_arrived_is_no_violation(
    tmp_path: Path,
) -> None:
    """A node commits an upsert, and before its answer reaches the writing lane another lane
    reads the item's score, which counts it. The writer's rating was sent, so the score is
    that tenant's own data: the load must not report it as another tenant's."""
    posted, scored = asyncio.Event(), asyncio.Event()

    async def upsert(request: web.Request) -> web.Response:
        body = await request.json()
        posted.set()
        await scored.wait()  # the answer leaves only after the score was read
        document = {**body, "tenant_id": TENANT, "updated_at": "2026-12-02T00:00:00.000000Z"}
        return web.json_response(document, status=201)

    async def score(request: web.Request) -> web.Response:
        scored.set()
        histogram = {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}
        item = request.match_info["item"]
        return web.json_response(
            {"item_id": item, "count": 1, "average": 4.0, "histogram": histogram}
        )

    app = web.Application()
    app.router.add_post(f"/v1/tenants/{TENANT}/ratings", upsert)
    app.router.add_get(f"/v1/tenants/{TENANT}/items/{{item}}/score", score)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    node = EdgeDaemon(
        "edge-1", tmp_path, {}, TcpProxy(0), TcpProxy(0), url=f"http://127.0.0.1:{port}"
    )
    tenant = TenantClients(TENANT, "t0", [ApiKey("key-1", "secret", None)])
    seen = Observations()
    # Only the two requests below are sent: nothing reads the cluster.
    traffic = Traffic(cast(Cluster, None), [tenant], seen)
    await traffic.open()
    try:
        key = tenant.keys[0]
        writing = asyncio.create_task(traffic._upsert(node, tenant, key, "t0-u0", "item-3", 4))
        await posted.wait()
        await traffic._read_score(node, tenant, key, "item-3")
        await writing
    finally:
        await traffic.close()
        await runner.cleanup()
    assert seen.violations == []
    assert seen.requests == 2
