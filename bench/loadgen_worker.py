"""The Python load generator's worker process: keep-alive connections on asyncio, timed.

`python -m bench.loadgen_worker SPEC` takes a JSON spec (a `bench.loadgen.Target` as a dict,
with `connections`, `seconds` and `tag`), keeps that many connections busy for that long,
one request in flight on each, and prints one JSON result on stdout: every latency, the
count of each status, and the socket errors. `bench.loadgen.run_python` starts one per
load-generator CPU and merges their results.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from bench.loadgen import check_template, render_body


def parse_response(buffer: bytearray) -> tuple[int, int] | None:
    """(status, length) of the complete response at the start of `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    if b"transfer-encoding: chunked" in head:
        raise ValueError("chunked responses are not supported by the Python generator")
    start = head.find(b"\r\ncontent-length:")
    length = 0
    if start >= 0:
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else end])
    total = end + 4 + length
    return (int(head[9:12]), total) if len(buffer) >= total else None


class Tally:
    """Everything one worker process saw, across its connections."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.socket_errors = 0


class KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection sending the next request as soon as an answer arrives."""

    def __init__(self, requests: Iterator[bytes], tally: Tally, deadline: float) -> None:
        self._requests = requests
        self._tally = tally
        self._deadline = deadline
        self._buffer = bytearray()
        self._sent_at: float | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        now = time.perf_counter()
        if now >= self._deadline:
            self._sent_at = None
            self._transport.close()
            return
        self._sent_at = now
        self._transport.write(next(self._requests))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = parse_response(self._buffer)
        if answer is None or self._sent_at is None:
            return
        status, length = answer
        del self._buffer[:length]
        self._tally.latencies_ms.append((time.perf_counter() - self._sent_at) * 1000)
        self._tally.statuses[str(status)] += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sent_at is not None:  # the server closed while a request was in flight
            self._tally.socket_errors += 1
        if not self.finished.done():
            self.finished.set_result(None)


def request_stream(spec: Mapping[str, Any], stream: str) -> Iterator[bytes]:
    headers = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    head = f"{spec['method']} {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
    template = spec["body"]
    if template is None:
        request = f"{head}{headers}\r\n".encode()
        while True:
            yield request
    n = 0
    while True:
        body = render_body(str(template), stream, n)
        yield f"{head}{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body
        n += 1


async def drive(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Keep `connections` connections busy for `seconds`; the worker's raw result."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    started = time.perf_counter()
    deadline = started + spec["seconds"]
    connections = []
    for index in range(spec["connections"]):
        requests = request_stream(spec, f"{spec['tag']}-{index}")
        connect = functools.partial(KeepAliveConnection, requests, tally, deadline)
        _, protocol = await loop.create_connection(connect, spec["host"], spec["port"])
        connections.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(c.finished for c in connections)), timeout=60)
    return {
        "seconds": time.perf_counter() - started,
        "latencies_ms": tally.latencies_ms,
        "statuses": dict(tally.statuses),
        "socket_errors": tally.socket_errors,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["body"] is not None:
        check_template(spec["body"])
    try:
        import uvloop  # noqa: PLC0415 - the generator is faster on uvloop, and works without
    except ImportError:
        result = asyncio.run(drive(spec))
    else:
        result = uvloop.run(drive(spec))
    # The event loop may leave stdout non-blocking; the result (every latency) is far larger
    # than a pipe holds, and a non-blocking write would stop at the pipe's size.
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
