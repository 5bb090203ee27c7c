"""Request limits over real sockets: oversized request lines, queries and headers get
problem+json (not aiohttp's plain text), and slow clients are cut off by timeouts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.conftest import NodeFactory
from tests.support import RunningNode

PROBLEM = "urn:edge-node:problem:"
TENANT = "00000000-0000-4000-8000-000000000000"


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: Any


def parse_answer(raw: bytes) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, orjson.loads(body) if body else None)


async def connect(node: RunningNode) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = node.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def send_raw(node: RunningNode, data: bytes) -> RawAnswer:
    """Send `data` as is on a fresh connection; the answer, read until the server closes."""
    reader, writer = await connect(node)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return parse_answer(raw)


def request(path: str = f"/v1/tenants/{TENANT}/ratings", headers: bytes = b"") -> bytes:
    return (
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n"
        + headers
        + b"\r\n"
    )


def assert_problem(answer: RawAnswer, status: int, slug: str) -> None:
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.body["type"] == PROBLEM + slug
    assert answer.body["status"] == status


@pytest.fixture
async def limited(make_node: NodeFactory) -> RunningNode:
    """A node with small, distinct limits and one-second slow-client timeouts."""
    return await make_node(
        **{
            "limits.max_request_line_bytes": 1024,
            "limits.max_query_bytes": 300,
            "limits.max_header_line_bytes": 2048,
            "limits.max_header_bytes": 4096,
            "limits.max_headers": 16,
            "limits.header_timeout_seconds": 1.0,
            "limits.body_timeout_seconds": 1.0,
        }
    )


class TestSizeLimits:
    async def test_request_line_too_long_is_414_problem(self, limited: RunningNode) -> None:
        """A path past max_request_line_bytes is refused by the parser as 414 uri-too-long."""
        answer = await send_raw(limited, request("/v1/" + "a" * 1100))
        assert_problem(answer, 414, "uri-too-long")
        assert "max_request_line_bytes" in answer.body["detail"]

    async def test_query_too_long_is_414_problem(self, limited: RunningNode) -> None:
        """A query string past max_query_bytes, in a request line within its limit, is 414."""
        answer = await send_raw(limited, request(f"/v1/tenants/{TENANT}/ratings?x=" + "1" * 400))
        assert_problem(answer, 414, "uri-too-long")
        assert "max_query_bytes" in answer.body["detail"]

    async def test_a_query_within_the_limit_passes(self, limited: RunningNode) -> None:
        """A query string just under max_query_bytes reaches the router (401: no credential)."""
        answer = await send_raw(limited, request(f"/v1/tenants/{TENANT}/ratings?x=" + "1" * 290))
        assert_problem(answer, 401, "missing-credentials")

    async def test_header_too_long_is_431_problem(self, limited: RunningNode) -> None:
        """One header past max_header_line_bytes is refused by the parser as 431."""
        answer = await send_raw(limited, request(headers=b"X-Big: " + b"b" * 2100 + b"\r\n"))
        assert_problem(answer, 431, "headers-too-large")
        assert "max_header_line_bytes" in answer.body["detail"]

    async def test_too_many_headers_is_431_problem(self, limited: RunningNode) -> None:
        """More header fields than max_headers is 431 headers-too-large."""
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
        answer = await send_raw(limited, request(headers=many))
        assert_problem(answer, 431, "headers-too-large")
        assert "max_headers" in answer.body["detail"]

    async def test_headers_too_large_in_total_is_431_problem(self, limited: RunningNode) -> None:
        """Headers each within their line limit but past max_header_bytes together are 431."""
        big = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1500) for i in range(4))
        answer = await send_raw(limited, request(headers=big))
        assert_problem(answer, 431, "headers-too-large")
        assert "max_header_bytes" in answer.body["detail"]

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"GARBAGE\r\n\r\n", id="no-method"),
            pytest.param(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
            pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", id="header-without-colon"),
        ],
    )
    async def test_malformed_http_is_400_problem(self, limited: RunningNode, data: bytes) -> None:
        """Bytes that are not HTTP/1.1 get 400 malformed-request as problem+json."""
        assert_problem(await send_raw(limited, data), 400, "malformed-request")

    async def test_default_limits_refuse_a_huge_url_as_a_problem(self, node: RunningNode) -> None:
        """With the default configuration too, a 20 KB URL is a 414 problem, not plain text."""
        assert_problem(await send_raw(node, request("/" + "a" * 20000)), 414, "uri-too-long")


class TestSlowClients:
    async def test_trickled_headers_are_cut_off(self, limited: RunningNode) -> None:
        """A client sending one header line every 0.2 s is disconnected by the one-second
        header timeout long before its 30 lines are sent, with no answer."""
        reader, writer = await connect(limited)
        sent = 0
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n")
            for sent in range(1, 31):
                await asyncio.sleep(0.2)
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"X-Slow: %d\r\n" % sent)
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                with_data = await _read_if_any(reader)
                if with_data is not None:
                    assert with_data == b"", "the server answered a request it never received"
                    break
        finally:
            writer.close()
        assert sent < 30

    async def test_trickled_body_gets_408_and_the_connection_closes(
        self, limited: RunningNode
    ) -> None:
        """A body of 100 bytes trickled a byte every 0.2 s is answered 408 request-timeout
        after the one-second body timeout, and the server closes the connection."""
        tenant = limited.create_tenant()
        reader, writer = await connect(limited)
        head = (
            f"POST /v1/tenants/{tenant.tenant_id}/ratings HTTP/1.1\r\nHost: edge\r\n"
            f"X-API-Key: {tenant.api_key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        )
        writer.write(head.encode())
        raw = b""
        try:
            for _ in range(50):  # 10 s of trickling at most; the timeout is 1 s
                await asyncio.sleep(0.2)
                chunk = await _read_if_any(reader)
                if chunk is not None:  # the server answered, or closed
                    raw = chunk + await asyncio.wait_for(reader.read(), 5)
                    break
                writer.write(b" ")
                await writer.drain()
        finally:
            writer.close()
        answer = parse_answer(raw)
        assert_problem(answer, 408, "request-timeout")
        assert reader.at_eof()

    async def test_a_body_sent_in_pieces_within_the_timeout_is_served(
        self, make_node: NodeFactory
    ) -> None:
        """A body arriving in three pieces 0.1 s apart, within the timeout, is served (201)."""
        node = await make_node(**{"limits.body_timeout_seconds": 5.0})
        tenant = node.create_tenant()
        body = orjson.dumps({"user_id": "u", "item_id": "i", "score": 4})
        reader, writer = await connect(node)
        writer.write(
            f"POST /v1/tenants/{tenant.tenant_id}/ratings HTTP/1.1\r\nHost: edge\r\n"
            f"X-API-Key: {tenant.api_key}\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for piece in (body[:10], body[10:20], body[20:]):
            await asyncio.sleep(0.1)
            writer.write(piece)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert parse_answer(raw).status == 201


async def _read_if_any(reader: asyncio.StreamReader) -> bytes | None:
    """What the server sent so far (b"" once it closed), or None if nothing yet."""
    try:
        return await asyncio.wait_for(reader.read(4096), 0.01)
    except TimeoutError:
        return None
