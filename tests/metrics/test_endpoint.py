"""GET /metrics on a node serving real HTTP: what requests, the queue and the registry show."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from edge_node.tenants.webhook_signature import signature_header
from edge_node.tenants.webhooks import WEBHOOK_PATH
from tests.metrics.conftest import MeteredFactory, MeteredNode

SCORE_ROUTE = "/v1/tenants/{tenant_id}/items/{item_id}/score"


async def get_score(metered: MeteredNode, tenant_id: str, headers: dict[str, str]) -> int:
    node = metered.node
    url = node.tenant_url(tenant_id, "/items/book-42/score")
    async with node.session.get(url, headers=headers) as response:
        return response.status


class TestEndpoint:
    async def test_metrics_are_text_exposition_without_credential_billing_or_rate_limit(
        self, metered: MeteredNode
    ) -> None:
        """/metrics answers without a credential in the 0.0.4 text format, names the build,
        bills nothing and carries no rate-limit headers."""
        node = metered.node
        for _ in range(3):
            async with node.session.get(f"{node.url}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                assert "RateLimit-Limit" not in response.headers
                text = await response.text()
        assert "# TYPE edge_node_build_info gauge" in text
        samples = await metered.scrape()
        (build,) = [labels for name, labels in samples if name == "edge_node_build_info"]
        assert dict(build)["version"]
        assert node.meter.queue is not None
        await node.meter.queue.flush()
        assert node.meter.queue.last_seq == 0

    async def test_metrics_can_be_turned_off(self, make_metered: MeteredFactory) -> None:
        """With metrics.enabled = false /metrics is a 404 problem and requests are not timed."""
        metered = await make_metered(**{"metrics.enabled": False})
        node = metered.node
        tenant = node.create_tenant()
        assert await get_score(metered, tenant.tenant_id, tenant.headers) == 200
        async with node.session.get(f"{node.url}/metrics") as response:
            assert response.status == 404
            assert (await response.json())["type"].endswith(":metrics-disabled")
        assert metered.metrics.registry.get_sample_value("edge_node_http_requests_total") is None
        assert metered.metrics.requests.requests == {}


class TestRequests:
    async def test_requests_are_counted_by_route_template_never_by_raw_path(
        self, metered: MeteredNode
    ) -> None:
        """Two score reads count 2 under the route template, with latency observed; neither
        the item id nor the tenant id appears in any label."""
        tenant = metered.node.create_tenant()
        for _ in range(2):
            assert await get_score(metered, tenant.tenant_id, tenant.headers) == 200
        samples = await metered.scrape()
        ok = frozenset({("method", "GET"), ("route", SCORE_ROUTE), ("status", "200")})
        assert samples[("edge_node_http_requests_total", ok)] == 2
        timed = frozenset({("method", "GET"), ("route", SCORE_ROUTE)})
        assert samples[("edge_node_http_request_duration_seconds_count", timed)] == 2
        assert samples[("edge_node_http_request_duration_seconds_sum", timed)] > 0
        every = frozenset({*timed, ("le", "+Inf")})
        assert samples[("edge_node_http_request_duration_seconds_bucket", every)] == 2
        values = {value for _, labels in samples for _, value in labels}
        assert not any("book-42" in v or tenant.tenant_id in v for v in values)

    async def test_unknown_paths_share_one_series(self, metered: MeteredNode) -> None:
        """Requests no route answers (unknown paths, a method the path does not take) count
        under route `unmatched`, not per path."""
        node = metered.node
        for path in ("/nope/1", "/nope/2", "/.env"):
            async with node.session.get(node.url + path) as response:
                assert response.status == 404
        async with node.session.patch(f"{node.url}/healthz") as response:
            assert response.status == 405
        samples = await metered.scrape()
        for method, status, count in (("GET", "404", 3), ("PATCH", "405", 1)):
            labels = {("method", method), ("route", "unmatched"), ("status", status)}
            assert samples[("edge_node_http_requests_total", frozenset(labels))] == count

    async def test_refusals_are_counted_with_their_status_and_429s_as_rate_limited(
        self, metered: MeteredNode
    ) -> None:
        """A 401 and a 429 are counted under the route with their status; the 429 also in
        edge_node_rate_limited_requests_total, which has no tenant label by default."""
        tenant = metered.node.create_tenant(rate_limit=1)
        assert await get_score(metered, tenant.tenant_id, {}) == 401
        assert await get_score(metered, tenant.tenant_id, tenant.headers) == 200
        assert await get_score(metered, tenant.tenant_id, tenant.headers) == 429
        samples = await metered.scrape()
        for status in ("401", "200", "429"):
            labels = frozenset({("method", "GET"), ("route", SCORE_ROUTE), ("status", status)})
            assert samples[("edge_node_http_requests_total", labels)] == 1
        assert samples[("edge_node_rate_limited_requests_total", frozenset())] == 1

    async def test_the_tenant_label_appears_only_when_the_operator_opts_in(
        self, make_metered: MeteredFactory
    ) -> None:
        """With metrics.tenant_label the admitted tenant labels requests and 429s; a request
        whose credential failed gets an empty tenant, never the path's claim."""
        metered = await make_metered(**{"metrics.tenant_label": True})
        tenant = metered.node.create_tenant(rate_limit=1)
        assert await get_score(metered, tenant.tenant_id, {}) == 401
        assert await get_score(metered, tenant.tenant_id, tenant.headers) == 200
        assert await get_score(metered, tenant.tenant_id, tenant.headers) == 429
        samples = await metered.scrape()
        base = {"method": "GET", "route": SCORE_ROUTE}
        for status, who in (("401", ""), ("200", tenant.tenant_id), ("429", tenant.tenant_id)):
            labels = frozenset({**base, "status": status, "tenant": who}.items())
            assert samples[("edge_node_http_requests_total", labels)] == 1
        limited = frozenset({("tenant", tenant.tenant_id)})
        assert samples[("edge_node_rate_limited_requests_total", limited)] == 1


class TestSources:
    async def test_queue_and_meter_show_depth_age_bytes_fsyncs_and_usage(
        self, metered: MeteredNode
    ) -> None:
        """Three billable reads leave three records for the billing consumer, a young oldest
        record, bytes on disk under the bound, timed fsyncs and three recorded units."""
        tenant = metered.node.create_tenant()
        for _ in range(3):
            assert await get_score(metered, tenant.tenant_id, tenant.headers) == 200
        samples = await metered.scrape()
        billing = frozenset({("consumer", "billing")})
        assert samples[("edge_node_queue_depth_records", billing)] == 3
        assert 0 <= samples[("edge_node_queue_oldest_unconsumed_age_seconds", billing)] < 60
        assert samples[("edge_node_queue_appended_records_total", frozenset())] == 3
        assert samples[("edge_node_queue_size_bytes", frozenset())] > 0
        capacity = metered.node.config.queue.max_bytes
        assert samples[("edge_node_queue_capacity_bytes", frozenset())] == capacity
        assert samples[("edge_node_queue_fsync_duration_seconds_count", frozenset())] >= 3
        assert samples[("edge_node_queue_write_failed", frozenset())] == 0
        recorded = frozenset({("outcome", "recorded")})
        assert samples[("edge_node_usage_events_total", recorded)] == 3
        assert samples[("edge_node_usage_units_recorded_total", frozenset())] == 3

    async def test_tenants_are_counted_by_status(self, metered: MeteredNode) -> None:
        """Two tenants, one suspended: one active, one suspended, none past due or canceled."""
        metered.node.create_tenant("a")
        suspended = metered.node.create_tenant("b")
        metered.node.storage.registry.set_status(suspended.tenant_id, "suspended")
        samples = await metered.scrape()
        counts = {
            dict(labels)["status"]: value
            for (name, labels), value in samples.items()
            if name == "edge_node_tenants"
        }
        assert counts == {"active": 1, "suspended": 1, "past_due": 0, "canceled": 0}

    async def test_webhook_deliveries_are_counted_by_outcome(
        self, make_metered: MeteredFactory, tmp_path: Path
    ) -> None:
        """An event for a tenant not synced down yet counts as tenant_not_synced each time it
        is answered 503; one too old to wait for, its redelivery and a forged delivery count
        as unknown_tenant, duplicate and invalid_signature."""
        secret = "whsec_metrics_test_5b1e0c7a9d3f"
        path = tmp_path / "whsec"
        path.write_text(secret + "\n")
        metered = await make_metered(**{"webhooks.secret_file": str(path)})

        def event(event_id: str, age_hours: float) -> bytes:
            return orjson.dumps(
                {
                    "id": event_id,
                    "object": "event",
                    "created": int(time.time() - age_hours * 3600),
                    "type": "customer.subscription.updated",
                    "data": {"object": {"id": "sub_1", "customer": "cus_x", "status": "active"}},
                }
            )

        deliveries = [
            (event("evt_new", 0), (secret,), 503),
            (event("evt_new", 0), (secret,), 503),
            (event("evt_old", 100), (secret,), 200),
            (event("evt_old", 100), (secret,), 200),
            (event("evt_old", 100), ("whsec_forged",), 400),
        ]
        for body, secrets, status in deliveries:
            header = signature_header(body, secrets, int(time.time()))
            async with metered.node.session.post(
                metered.node.url + WEBHOOK_PATH,
                data=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ) as response:
                assert response.status == status
        samples = await metered.scrape()
        expected = {"tenant_not_synced": 2, "unknown_tenant": 1, "duplicate": 1}
        for outcome, count in {**expected, "invalid_signature": 1}.items():
            labels = frozenset({("outcome", outcome)})
            assert samples[("edge_node_webhook_events_total", labels)] == count, outcome
        assert samples[("edge_node_webhook_events_total", frozenset({("outcome", "applied")}))] == 0
