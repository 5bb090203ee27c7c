"""The tenant's usage API over real HTTP: what it shows, what it bills (nothing), its problems."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_node.config import BillingConfig
from sync.backoff import Backoff
from sync.billing.flush import BillingConsumer
from sync.billing.ledger import BillingLedger
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.conftest import NodeFactory
from tests.rating.test_api import conforms
from tests.support import RunningNode, Tenant
from tests.sync.billing.support import EVENT_NAME, MovableClock
from tests.sync.stripe.standin_support import advance, clock_customer, plain_client
from tests.usage.test_meter import events_on_disk

HOUR, DAY = 3600, 86_400
ZERO = {"pending": 0, "sent": 0, "confirmed": 0, "invoiced": 0}


async def usage(node: RunningNode, tenant: Tenant, **headers: str) -> tuple[int, Any, Any]:
    """GET the tenant's usage: (status, body, headers)."""
    url = node.tenant_url(tenant.tenant_id, "/usage")
    async with node.session.get(url, headers={**tenant.headers, **headers}) as answer:
        return answer.status, await answer.json(content_type=None), answer.headers


async def serve(node: RunningNode, tenant: Tenant, reads: int) -> None:
    """One rating created and `reads` score reads, each billed."""
    url = node.tenant_url(tenant.tenant_id)
    body = {"user_id": "u1", "item_id": "i1", "score": 4}
    async with node.session.post(f"{url}/ratings", json=body, headers=tenant.headers) as answer:
        assert answer.status == 201
    for _ in range(reads):
        async with node.session.get(f"{url}/items/i1/score", headers=tenant.headers) as answer:
            assert answer.status == 200


def figures(period: dict[str, Any], operation: str) -> dict[str, int]:
    return {**ZERO, **period["operations"].get(operation, {})}


class TestUsageAtTheEdge:
    async def test_usage_not_yet_billed_is_pending_and_the_request_bills_nothing(
        self, node: RunningNode
    ) -> None:
        """Usage served and still in the queue shows as pending, per operation, in a current
        period the node does not know yet; asking for it appends no usage event and carries
        the rate limit's headers, as it takes a token like any route."""
        tenant = node.create_tenant()
        await serve(node, tenant, 3)
        status, body, headers = await usage(node, tenant)
        assert status == 200
        conforms("TenantUsage", body)
        current = body["current_period"]
        assert (current["start"], current["end"], current["invoice"]) == (None, None, "unknown")
        assert figures(current, "rating.create") == {**ZERO, "pending": 1}
        assert figures(current, "score.read") == {**ZERO, "pending": 3}
        assert current["total"] == {**ZERO, "pending": 4}
        assert body["quota"] is None  # no allowance
        assert body["previous_period"] is None
        assert any(name.lower().startswith("ratelimit") for name in headers)
        assert len(events_on_disk(node)) == 4

    async def test_an_allowance_shows_its_use_and_the_thresholds_crossed(
        self, node: RunningNode
    ) -> None:
        """A tenant with an allowance of 5 units a month that has used 4: the answer shows the
        calendar month, 4 used, 1 remaining, and the 80% threshold crossed once."""
        tenant_row, key = node.storage.registry.create_tenant(
            "capped",
            quota=5,
            quota_policy="block",  # type: ignore[call-arg]
        )
        tenant = Tenant(tenant_row.tenant_id, key.api_key, key.key_id)
        await serve(node, tenant, 3)
        status, body, _ = await usage(node, tenant)
        assert status == 200
        conforms("TenantUsage", body)
        quota = body["quota"]
        assert (quota["allowance"], quota["policy"], quota["used"], quota["remaining"]) == (
            5,
            "block",
            4,
            1,
        )
        assert quota["period"]["start"].endswith("-01T00:00:00Z")
        assert [(t["percent"], t["used"]) for t in quota["thresholds_crossed"]] == [(80, 4)]

    async def test_the_usage_api_takes_a_token_of_the_rate_limit(
        self, make_node: NodeFactory
    ) -> None:
        """Reading usage costs the node as much as a billable read, so it is rate-limited like
        one (and still bills nothing): a tenant allowed 2 requests a minute gets its usage
        twice, then 429 `rate-limited` with Retry-After, and no usage event was appended."""
        node = await make_node()
        tenant = node.create_tenant(rate_limit=2)
        for _ in range(2):
            assert (await usage(node, tenant))[0] == 200
        status, body, headers = await usage(node, tenant)
        assert (status, body["type"]) == (429, "urn:edge-node:problem:rate-limited")
        assert int(headers["Retry-After"]) > 0
        assert events_on_disk(node) == []

    async def test_a_tenant_that_must_pay_sees_its_usage_a_suspended_one_does_not(
        self, node: RunningNode
    ) -> None:
        """The usage route bills nothing, so a canceled subscription (402 elsewhere) does not
        refuse it; a suspended tenant is refused it like any route."""
        tenant = node.create_tenant()
        node.storage.registry.set_status(tenant.tenant_id, "canceled")
        score = node.tenant_url(tenant.tenant_id, "/items/i1/score")
        async with node.session.get(score, headers=tenant.headers) as answer:
            assert answer.status == 402
        assert (await usage(node, tenant))[0] == 200
        node.storage.registry.set_status(tenant.tenant_id, "suspended")
        status, body, _ = await usage(node, tenant)
        assert (status, body["type"].rsplit(":", 1)[-1]) == (403, "tenant-suspended")


class TestUsageProblems:
    @pytest.mark.parametrize(
        ("case", "status", "slug"),
        [
            ("tenant id not a UUID", 400, "invalid-parameter"),
            ("another tenant's key", 403, "tenant-mismatch"),
            ("no credential", 401, "missing-credentials"),
            ("a token with a role that is none of the node's", 401, "invalid-token"),
        ],
    )
    async def test_bad_requests_are_answered_as_problems(
        self, node: RunningNode, case: str, status: int, slug: str
    ) -> None:
        """Each bad request gets its status as application/problem+json with a stable type,
        and appends no usage event."""
        tenant, other = node.create_tenant("a"), node.create_tenant("b")
        path, headers = tenant.tenant_id, tenant.headers
        if case == "tenant id not a UUID":
            path = "not-a-uuid"
        elif case == "another tenant's key":
            headers = other.headers
        elif case == "no credential":
            headers = {}
        else:
            token = node.token(tenant.tenant_id, role="auditor")
            headers = {"Authorization": f"Bearer {token}"}
        url = f"{node.url}/v1/tenants/{path}/usage"
        async with node.session.get(url, headers=headers) as answer:
            assert answer.status == status
            assert answer.content_type == "application/problem+json"
            problem = await answer.json(content_type=None)
        conforms("Problem", problem)
        assert problem["type"].endswith(":" + slug)
        assert events_on_disk(node) == []

    async def test_records_that_cannot_be_read_are_a_503_with_retry_after(
        self, node: RunningNode
    ) -> None:
        """A usage queue that cannot be read (here a file where a queue directory belongs)
        is answered 503 `usage-unavailable` with Retry-After, never 500."""
        tenant = node.create_tenant()
        (node.config.data_path / "queue" / "worker-9").write_text("not a queue")
        status, problem, headers = await usage(node, tenant)
        assert status == 503
        conforms("Problem", problem)
        assert problem["type"].endswith(":usage-unavailable")
        assert int(headers["Retry-After"]) > 0


@pytest.fixture
async def gateway(standin: StripeStandin) -> AsyncIterator[StripeGateway]:
    adapter = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=2)
    yield adapter
    await adapter.close()


class TestUsageBilled:
    async def test_usage_moves_from_pending_to_confirmed_to_invoiced(
        self, make_node: NodeFactory, standin: StripeStandin, gateway: StripeGateway
    ) -> None:
        """Through the official SDK against the stand-in, on a test clock: once flushed, the
        usage is confirmed in the current period Stripe reported; once that period has ended
        and its invoice is final, it is the previous period's and invoiced, while the usage
        API itself never calls Stripe (it answers with Stripe cut off)."""
        clock = MovableClock()
        node = await make_node(clock=clock)
        tenant = node.create_tenant()
        async with plain_client(standin) as client:
            frozen = int(standin.clock.now() - 2 * DAY)
            test_clock, customer = await clock_customer(client, frozen)
            node.storage.registry.set_stripe_customer(tenant.tenant_id, customer)
            catalog = await gateway.bootstrap(meter_event_name=EVENT_NAME)
            await gateway.ensure_subscription(
                tenant_id=tenant.tenant_id,
                customer_id=customer,
                price_ids=[catalog.price_ids["payg"]],
            )
            frozen = int(standin.clock.now())
            await advance(client, test_clock, frozen)
            await serve(node, tenant, 3)
            clock.advance(600)  # the usage's windows are complete
            consumer = BillingConsumer(
                node.meter.queue,
                BillingLedger.open(node.config.data_path),
                gateway,
                BillingConfig(),
                node_id=node.config.node_id,
                event_name=EVENT_NAME,
                clock=clock,
                backoff=Backoff(initial=0.01, maximum=0.05),
            )
            try:
                await consumer.run_until_settled()
                standin.set_switches(drop=True)
                _, body, _ = await usage(node, tenant)
                current = body["current_period"]
                assert current["invoice"] == "open"
                assert current["start"] is not None
                assert current["end"] is not None
                assert figures(current, "score.read") == {**ZERO, "confirmed": 3}
                assert figures(current, "rating.create") == {**ZERO, "confirmed": 1}
                standin.set_switches(drop=False)
                (subscription,) = standin.account.subscriptions.values()
                period_end = int(subscription["items"]["data"][0]["current_period_end"])
                moved = period_end + 4 * HOUR - frozen
                await advance(client, test_clock, frozen + moved)
                clock.advance(moved)
                await consumer.run_round()  # reads the ended period again
            finally:
                await consumer.close()
        _, body, _ = await usage(node, tenant)
        conforms("TenantUsage", body)
        previous, current = body["previous_period"], body["current_period"]
        assert previous["end"] == current["start"]
        assert (previous["invoice"], current["invoice"]) == ("final", "open")
        assert figures(previous, "score.read") == {**ZERO, "confirmed": 3, "invoiced": 3}
        assert previous["total"] == {**ZERO, "confirmed": 4, "invoiced": 4}
        assert current["total"] == ZERO
