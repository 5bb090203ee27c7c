"""Requests driven through an aiohttp app's own connection handler, in memory, without sockets.

The in-process benchmarks (bench.request_path, bench.quota) serve an app through aiohttp's
`RequestHandler` (parser, routing, handler, response writer; for the daemon's app, the
runner it is served with, its front included) over
`MemoryTransport`s: keep-alive connections whose next request is sent as soon as the answer to
the last is written, as a load generator would, with nothing of the kernel in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

Figures = dict[str, Any]  # wall_us, cpu_us, failures


class MemoryTransport(asyncio.Transport):
    """One keep-alive connection in memory: each answer written sends the next request."""

    def __init__(self, protocol: asyncio.Protocol, next_request: Callable[[], bytes | None]):
        super().__init__()
        self._protocol = protocol
        self._next_request = next_request
        self._written = bytearray()
        self._closing = False
        self.answers = 0
        self.failures = 0
        self.done = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        self._protocol.connection_made(self)
        self._send()

    def _send(self) -> None:
        request = self._next_request()
        if request is None:
            self._protocol.connection_lost(None)
            self.done.set_result(None)
        else:
            self._protocol.data_received(request)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._written += data
        while (end := self._written.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._written[:end]).lower()
            length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            if len(self._written) < end + 4 + length:
                return
            if not head.startswith(b"http/1.1 2"):
                self.failures += 1
            del self._written[: end + 4 + length]
            self.answers += 1
            asyncio.get_running_loop().call_soon(self._send)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def drive(server: Any, requests: Iterator[bytes], connections: int, count: int) -> Figures:
    """Send `count` requests over `connections` connections; time them."""
    sent = 0

    def next_request() -> bytes | None:
        nonlocal sent
        if sent >= count:
            return None
        sent += 1
        return next(requests)

    transports = [MemoryTransport(server(), next_request) for _ in range(connections)]
    wall, cpu = time.perf_counter(), time.thread_time()
    for transport in transports:
        transport.start()
    await asyncio.gather(*(transport.done for transport in transports))
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    failures = sum(transport.failures for transport in transports)
    return {"wall_us": wall / count * 1e6, "cpu_us": cpu / count * 1e6, "failures": failures}


def get_request(path: str, api_key: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: edge\r\nUser-Agent: bench\r\nX-API-Key: {api_key}\r\n\r\n"
    ).encode()


def post_request(path: str, api_key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: edge\r\nUser-Agent: bench\r\nX-API-Key: {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def repeat(request: bytes) -> Iterator[bytes]:
    while True:
        yield request


@contextlib.asynccontextmanager
async def running(app: Any) -> Any:
    """`app` set up as it is served: the daemon's app (it holds its configuration) by the
    daemon's runner, with the limits and the front the daemon serves it with; any other by
    aiohttp's own AppRunner."""
    from aiohttp import web  # noqa: PLC0415 - imported from the tree being measured

    from edge_node.http.app import CONFIG_KEY  # noqa: PLC0415
    from edge_node.web.limits import LimitedAppRunner  # noqa: PLC0415

    config = app.get(CONFIG_KEY)
    if config is None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
    else:
        runner = LimitedAppRunner(app, config.limits, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        yield runner.server
    finally:
        await runner.cleanup()
