"""What Prometheus metrics cost a request, measured in-process, free of HTTP noise.

`python -m bench.metrics` times, in one run, a score request's way through the node's front
(edge_node.http.front, with the request limits) counting it against the same front with
metrics off, and NodeMetrics.observe alone, and prints microseconds per request and the
difference. The HTTP view of the same cost is `python -m bench.http --scenarios
get-score-metrics-off,get-score-metrics-on` (docs/benchmarks.md); on a busy machine this one
is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from edge_node.admission.router import ADMITTED_TENANT_KEY
from edge_node.config import load_config
from edge_node.http.front import front
from edge_node.http.guards import RequestGuards
from edge_node.metrics.node import NodeMetrics
from edge_node.web.limits import RequestLimits

TENANT = "8e0c2a4e-0000-4000-8000-000000000000"
PATH = f"/v1/tenants/{TENANT}/items/book-42/score"


async def score_request(app: web.Application) -> web.Request:
    """A request matched to the score route, as the router leaves it for the route's handler."""

    async def score(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    resource = app.router.add_resource("/v1/tenants/{tenant_id}/items/{item_id}/score")
    route = resource.add_route("GET", score)
    request = make_mocked_request("GET", PATH, app=app)
    match = await app.router.resolve(request)
    assert match.route is route
    # What the app's routing does before the front reads the route (make_mocked_request's
    # own match_info is a mock, far slower than the real thing).
    request._match_info = match
    request[ADMITTED_TENANT_KEY] = TENANT
    return request


async def per_request_us(
    call: Callable[[web.Request], Awaitable[Any]], request: web.Request, count: int
) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await call(request)
    return (time.perf_counter() - started) / count * 1e6


async def measure(count: int, rounds: int) -> dict[str, float]:
    metrics = NodeMetrics(CollectorRegistry())
    app = web.Application()
    request = await score_request(app)
    response = web.Response(status=200)

    async def handler(request: web.Request) -> web.StreamResponse:
        return response

    guards = RequestGuards(RequestLimits(load_config(environ={}).limits), None)
    through_metrics = front(metrics, guards, app.router)(handler)
    without_metrics = front(None, guards, app.router)(handler)

    plain, metered = [], []
    for _ in range(rounds):
        plain.append(await per_request_us(without_metrics, request, count))
        metered.append(await per_request_us(through_metrics, request, count))
    started = time.perf_counter()
    for _ in range(count):
        metrics.observe("GET", "/v1/tenants/{tenant_id}/items/{item_id}/score", 200, 1e-4, "")
    observe = (time.perf_counter() - started) / count * 1e6
    return {
        "metrics_off_us": statistics.median(plain),
        "with_metrics_us": statistics.median(metered),
        "added_us": statistics.median(m - p for m, p in zip(metered, plain, strict=True)),
        "observe_us": observe,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests, args.rounds))
    print("| measured | us per request |")
    print("|---|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    main()
