"""RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers-11), read by a
Structured Field parser from real responses."""

from __future__ import annotations

import time

import aiohttp

from edge_node.usage.quotas import calendar_month
from tests.conftest import NodeFactory
from tests.support import RunningNode, Tenant, ratelimit_fields

LEGACY = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def create(node: RunningNode, **options: object) -> Tenant:
    tenant, key = node.storage.registry.create_tenant("acme", **options)  # type: ignore[arg-type]
    return Tenant(tenant.tenant_id, key.api_key, key.key_id)


async def read(node: RunningNode, tenant: Tenant) -> aiohttp.ClientResponse:
    url = node.tenant_url(tenant.tenant_id, "/items/item-1/score")
    async with node.session.get(url, headers=tenant.headers) as response:
        await response.read()
        return response


def month_seconds() -> tuple[int, float]:
    start, end = calendar_month(int(time.time() * 1000))
    return (end - start) // 1000, end / 1000 - time.time()


class TestMinutePolicy:
    async def test_an_admitted_request_names_the_minute_policy_and_what_is_left(
        self, node: RunningNode
    ) -> None:
        """`minute` with q (the tenant's limit) and w=60; RateLimit says r and t; no
        allowance means no `period` policy, and the older triplet is not sent."""
        tenant = create(node, rate_limit_per_minute=10)
        first, second = await read(node, tenant), await read(node, tenant)
        assert ratelimit_fields(first.headers, "RateLimit-Policy") == {"minute": {"q": 10, "w": 60}}
        assert ratelimit_fields(first.headers)["minute"]["r"] == 9
        current = ratelimit_fields(second.headers)
        assert set(current) == {"minute"}
        assert (current["minute"]["r"], current["minute"]["t"]) == (8, 12)
        assert not any(name in second.headers for name in LEGACY)

    async def test_a_rate_limited_answer_has_nothing_left_and_a_retry_after(
        self, node: RunningNode
    ) -> None:
        tenant = create(node, rate_limit_per_minute=1)
        await read(node, tenant)
        refused = await read(node, tenant)
        assert refused.status == 429
        assert ratelimit_fields(refused.headers)["minute"]["r"] == 0
        assert int(refused.headers["Retry-After"]) >= 1

    async def test_the_older_fields_are_sent_only_when_configured(
        self, make_node: NodeFactory
    ) -> None:
        """`rate_limit.legacy_headers` adds the triplet beside the draft's two fields."""
        node = await make_node(**{"rate_limit.legacy_headers": True})
        response = await read(node, create(node, rate_limit_per_minute=10))
        assert [response.headers[name] for name in LEGACY] == ["10", "9", "6"]
        assert ratelimit_fields(response.headers)["minute"]["r"] == 9


class TestPeriodPolicy:
    async def test_an_allowance_is_a_period_policy_counting_down_to_the_periods_end(
        self, node: RunningNode
    ) -> None:
        """`period`: q the allowance, w the month's length; r the units left after the
        request, t the seconds to the period's end."""
        tenant = create(node, quota=3, quota_policy="block")
        window, to_end = month_seconds()
        responses = [await read(node, tenant) for _ in range(3)]
        policies = ratelimit_fields(responses[0].headers, "RateLimit-Policy")
        assert policies["period"] == {"q": 3, "w": window}
        assert [ratelimit_fields(r.headers)["period"]["r"] for r in responses] == [2, 1, 0]
        assert abs(ratelimit_fields(responses[0].headers)["period"]["t"] - to_end) < 5

    async def test_the_quota_exhausted_answer_says_none_left_until_retry_after(
        self, node: RunningNode
    ) -> None:
        """The 429 carries both policies; the period's t is the same time as Retry-After."""
        tenant = create(node, quota=1, quota_policy="block")
        await read(node, tenant)
        refused = await read(node, tenant)
        assert refused.status == 429
        current = ratelimit_fields(refused.headers)
        assert current["period"]["r"] == 0
        assert current["period"]["t"] == int(refused.headers["Retry-After"])
        assert set(ratelimit_fields(refused.headers, "RateLimit-Policy")) == {"minute", "period"}
