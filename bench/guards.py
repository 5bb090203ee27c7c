"""Micro-benchmark: what the request guards (edge_node.http.guards) add to each request, in-process.

`python -m bench.guards` times, in one run and on the same request objects, a minimal
aiohttp app (one constant route, behind edge-node's front, edge_node.http.front, with metrics
off and guards that refuse nothing) handling requests, the same app behind the front with the
limits only, and with the abuse guard (client IP, block lookup, IP and tenant spike
counters) and the limits, over many client IPs and tenants. It prints microseconds per
request and each variant as a ratio of the minimal app. No server and no
sockets: HTTP parsing and writing are left out, so a real request costs more and the
guards' share of it is smaller than shown. `python -m bench.http --scenarios
get-score-abuse-off,get-score-abuse-on` measures the same over real HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from edge_node.abuse.blocks import BlockStore
from edge_node.abuse.guard import AbuseGuard, AbuseMetrics
from edge_node.admission.router import ADMITTED_TENANT_KEY
from edge_node.config import load_config
from edge_node.http.front import front
from edge_node.http.guards import RequestGuards
from edge_node.node_database import open_node_database
from edge_node.web.limits import RequestLimits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Transport:
    """Stands in for the socket's transport: only the peer address is asked of it."""

    def __init__(self, peer: str) -> None:
        self._peer = (peer, 4000)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._peer if name == "peername" else default


def requests(count: int, clients: int) -> list[web.Request]:
    made = []
    headers = {
        "Host": "edge",
        "User-Agent": "bench/1.0",
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "Connection": "keep-alive",
        "X-API-Key": "enk_" + "0" * 16 + "_" + "a" * 46,
    }
    for i in range(count):
        peer = f"10.0.{i % clients // 256}.{i % 256}"
        request = make_mocked_request(
            "GET",
            "/v1/tenants/t/items/book/score",
            headers=headers,
            transport=Transport(peer),
            payload=EMPTY_PAYLOAD,
        )
        request[ADMITTED_TENANT_KEY] = f"tenant-{i % 50}"
        made.append(request)
    return made


async def timed(
    calls: dict[str, Handler], batch: list[web.Request], rounds: int
) -> dict[str, float]:
    """Best microseconds per request of each call; the calls take turns in every round, so a
    busy spell on the machine hits them all alike."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for request in batch:
                await call(request)
            best[name] = min(best[name], (time.perf_counter() - start) / len(batch) * 1e6)
    return best


class Unguarded(RequestGuards):
    """Guards that refuse and count nothing: the front's cost without them, the baseline."""

    def admit(self, request: web.Request) -> float:
        return 0.0


def minimal_app(guards: RequestGuards) -> Handler:
    """One score route answering a constant, behind the front with `guards`: what the server
    calls with each request."""
    response = web.Response(body=b"{}", content_type="application/json")

    async def score(request: web.Request) -> web.StreamResponse:
        return response

    app = web.Application()
    app.router.add_get("/v1/tenants/{tenant_id}/items/{item_id}/score", score)
    app.freeze()
    # _handle: the app's own request handling, routing included.
    return front(None, guards, app.router)(app._handle)


async def measure(count: int, clients: int, rounds: int) -> dict[str, float]:
    """Best microseconds per request of the minimal app and of each guarded variant."""
    logging.getLogger("edge_node.abuse.guard").setLevel(logging.ERROR)  # spikes are expected here
    config = load_config(environ={})
    with tempfile.TemporaryDirectory() as directory:
        conn = open_node_database(Path(directory))
        guard = AbuseGuard(
            config.abuse, BlockStore(conn), AbuseMetrics(CollectorRegistry(auto_describe=True))
        )
        # Every edge-node app has the front: the guards' cost is what they add.
        limits = RequestLimits(config.limits)
        apps = {
            "minimal app": minimal_app(Unguarded(limits, None)),
            "+ limits": minimal_app(RequestGuards(limits, None)),
            "+ abuse + limits": minimal_app(RequestGuards(limits, guard)),
        }
        batch = requests(count, clients)
        results = await timed(apps, batch, rounds)
        conn.close()
    return results


async def main(count: int, clients: int, rounds: int) -> None:
    results = await measure(count, clients, rounds)
    base = results["minimal app"]
    print(f"{count} requests from {clients} client IPs and 50 tenants, best of {rounds} passes")
    print(
        "front and app._handle only: no HTTP parsing or writing, so the ratios overstate the cost"
    )
    print("| variant | us/request | added us | ratio |")
    print("|---|---:|---:|---:|")
    for name, us in results.items():
        print(f"| {name} | {us:.2f} | {us - base:.2f} | {us / base:.1%} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.clients, args.rounds))
