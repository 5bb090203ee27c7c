"""The node's front: failures, refusals and redirects get the request id and are counted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from edge_node.cli.daemon import queue_directory
from edge_node.http.app import NodeStorage, create_app
from edge_node.metrics.node import NodeMetrics
from edge_node.usage.meter import open_meter
from edge_node.web.limits import LimitedAppRunner
from tests.support import SigningKeys, node_config


async def failing(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug")


async def moved(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/healthz")


class Served:
    def __init__(self, url: str, metrics: NodeMetrics, session: aiohttp.ClientSession) -> None:
        self.url, self.metrics, self.session = url, metrics, session

    def count(self, route: str, status: int) -> float | None:
        return self.metrics.registry.get_sample_value(
            "edge_node_http_requests_total",
            {"method": "GET", "route": route, "status": str(status)},
        )


@pytest.fixture
async def served(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[Served]:
    """The node's app with two extra routes: one whose handler fails, one that redirects."""
    config = node_config(tmp_path / "var", signing_keys)
    storage = NodeStorage.open(config)
    meter = await open_meter(config.meter, config.queue, queue_directory(config), "test-node")
    metrics = NodeMetrics(CollectorRegistry())
    app = create_app(config, storage, meter, metrics=metrics)
    app.router.add_get("/failing", failing)
    app.router.add_get("/moved", moved)
    runner = LimitedAppRunner(app, config.limits, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        yield Served(f"http://{host}:{port}", metrics, session)
    await runner.cleanup()
    await meter.close()
    storage.close()


class TestFront:
    async def test_a_failing_handler_is_a_counted_500_problem_with_the_id(
        self, served: Served, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unexpected exception is logged and answered 500 problem+json carrying the
        client's request id, and counted under its route with status 500."""
        with caplog.at_level(logging.ERROR, logger="edge_node.web.answers"):
            async with served.session.get(
                served.url + "/failing", headers={"X-Request-Id": "failing-1"}
            ) as answer:
                body = await answer.json(content_type=None)
        assert answer.status == 500
        assert answer.content_type == "application/problem+json"
        assert body["type"] == "urn:edge-node:problem:internal-error"
        assert answer.headers["X-Request-Id"] == "failing-1"
        assert served.count("/failing", 500) == 1
        (logged,) = [r for r in caplog.records if r.name == "edge_node.web.answers"]
        assert logged.exc_info is not None
        assert "a bug" in str(logged.exc_info[1])

    async def test_a_redirect_is_aiohttps_answer_with_the_id_and_counted(
        self, served: Served
    ) -> None:
        """A redirect is not turned into a problem: it leaves as aiohttp answers it, with the
        request id, and is counted with its own status."""
        async with served.session.get(
            served.url + "/moved", headers={"X-Request-Id": "moved-1"}, allow_redirects=False
        ) as answer:
            await answer.read()
        assert answer.status == 302
        assert answer.headers["Location"] == "/healthz"
        assert answer.headers["X-Request-Id"] == "moved-1"
        assert served.count("/moved", 302) == 1

    async def test_a_request_the_guards_refuse_is_counted_under_its_route(
        self, served: Served
    ) -> None:
        """The guards run before routing; a request they refuse (a query string past
        limits.max_query_bytes) is still counted under the route it was for, and answered as
        a problem with its id."""
        query = "?q=" + "x" * 5000
        async with served.session.get(
            served.url + "/healthz" + query, headers={"X-Request-Id": "long-1"}
        ) as answer:
            body = await answer.json(content_type=None)
        assert answer.status == 414
        assert body["type"] == "urn:edge-node:problem:uri-too-long"
        assert answer.headers["X-Request-Id"] == "long-1"
        assert served.count("/healthz", 414) == 1

    async def test_a_refused_request_for_no_route_is_counted_unmatched(
        self, served: Served
    ) -> None:
        async with served.session.get(served.url + "/nowhere?q=" + "x" * 5000) as answer:
            await answer.read()
        assert answer.status == 414
        assert served.count("unmatched", 414) == 1

    async def test_an_unknown_expectation_is_a_417_problem_with_the_id(
        self, served: Served
    ) -> None:
        """aiohttp refuses an Expect other than 100-continue as it routes; inside the front,
        that refusal is problem+json with the request id, counted under its route."""
        async with served.session.get(
            served.url + "/healthz", headers={"Expect": "teapot", "X-Request-Id": "expect-1"}
        ) as answer:
            body = await answer.json(content_type=None)
        assert answer.status == 417
        assert answer.content_type == "application/problem+json"
        assert body["status"] == 417
        assert answer.headers["X-Request-Id"] == "expect-1"
        assert served.count("/healthz", 417) == 1
