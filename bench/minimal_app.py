"""The benchmark's baseline: the least an aiohttp app on uvloop can do for the same requests.

It answers the same path shapes as the daemon's score read, rating write and rating list
(an empty page), with no auth, no rate limit and no storage, so `daemon / baseline` is the
share of the framework's own throughput that survives the daemon's work. Run as
`python -m bench.minimal_app --port 0`; it prints one line "... listening on http://HOST:PORT"
when ready and stops on SIGTERM or SIGINT, like the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import uvloop
from aiohttp import web

SCORE = {"item_id": "bench-item", "count": 5, "average": 4.2, "histogram": {"4": 2, "5": 3}}


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def item_score(request: web.Request) -> web.Response:
    return _json({**SCORE, "item_id": request.match_info["item_id"]})


async def post_rating(request: web.Request) -> web.Response:
    rating = orjson.loads(await request.read())
    return _json({"tenant_id": request.match_info["tenant_id"], **rating}, status=201)


async def list_ratings(request: web.Request) -> web.Response:
    return _json({"ratings": [], "next_cursor": None})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/tenants/{tenant_id}/items/{item_id}/score", item_score)
    app.router.add_get("/v1/tenants/{tenant_id}/ratings", list_ratings)
    app.router.add_post("/v1/tenants/{tenant_id}/ratings", post_rating)
    return app


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, set up as the daemon's runner is (no access log)."""
    runner = web.AppRunner(create_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"minimal-app listening on http://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
