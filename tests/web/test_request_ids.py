"""X-Request-Id over real HTTP: kept or generated, echoed on every answer, in logs and usage."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest

from edge_node.usage.event import UsageEvent
from tests.support import RunningNode
from tests.test_logs import json_logs

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logs at debug level into a buffer, for the length of one test."""
    with json_logs("debug") as stream:
        yield stream


async def request_id(
    node: RunningNode, method: str, path: str, headers: dict[str, str], **kwargs: object
) -> tuple[int, str]:
    async with node.session.request(method, node.url + path, headers=headers, **kwargs) as answer:  # type: ignore[arg-type]
        await answer.read()
        return answer.status, answer.headers["X-Request-Id"]


class TestRequestIds:
    async def test_a_well_formed_id_is_echoed_and_written_into_the_usage_event(
        self, node: RunningNode
    ) -> None:
        """The client's id comes back on the answer and is the usage event's request_id."""
        tenant = node.create_tenant()
        status, echoed = await request_id(
            node,
            "GET",
            f"/v1/tenants/{tenant.tenant_id}/items/book/score",
            {**tenant.headers, "X-Request-Id": "trace-7f3a:b.c_d-1"},
        )
        assert (status, echoed) == (200, "trace-7f3a:b.c_d-1")
        assert node.meter.queue is not None
        (record,) = await node.meter.queue.tail(1)
        assert UsageEvent.decode(record.payload).request_id == "trace-7f3a:b.c_d-1"

    async def test_a_generated_id_is_the_usage_events_too(self, node: RunningNode) -> None:
        """Without an id of the client's, the fresh one on the answer is the usage event's."""
        tenant = node.create_tenant()
        path = f"/v1/tenants/{tenant.tenant_id}/items/book/score"
        status, echoed = await request_id(node, "GET", path, {**tenant.headers})
        assert status == 200
        assert GENERATED.fullmatch(echoed)
        assert node.meter.queue is not None
        (record,) = await node.meter.queue.tail(1)
        assert UsageEvent.decode(record.payload).request_id == echoed

    @pytest.mark.parametrize(
        "given",
        [None, "has space", "x" * 129, "semi;colon", ""],
        ids=["none", "space", "long", "semi", "empty"],
    )
    async def test_a_missing_or_malformed_id_is_replaced_by_a_fresh_one(
        self, node: RunningNode, given: str | None
    ) -> None:
        """Without a sane id the answer carries a new random one, different each time."""
        headers = {} if given is None else {"X-Request-Id": given}
        ids = {(await request_id(node, "GET", "/healthz", headers))[1] for _ in range(2)}
        assert len(ids) == 2
        assert all(GENERATED.fullmatch(i) for i in ids)

    async def test_refusals_and_problems_echo_the_id(self, node: RunningNode) -> None:
        """401, 403, 429, 404, 400 and /metrics answers all carry the client's id."""
        tenant = node.create_tenant(rate_limit=1)
        other = node.create_tenant("other")
        score = f"/v1/tenants/{tenant.tenant_id}/items/book/score"
        cases = [
            ("GET", score, {}, 401),
            ("GET", f"/v1/tenants/{other.tenant_id}/items/book/score", tenant.headers, 403),
            ("GET", score, tenant.headers, 200),
            ("GET", score, tenant.headers, 429),
            ("GET", "/no/such/route", {}, 404),
            ("GET", "/metrics", {}, 200),
        ]
        for n, (method, path, headers, expected) in enumerate(cases):
            status, echoed = await request_id(
                node, method, path, {**headers, "X-Request-Id": f"case-{n}"}
            )
            assert (status, echoed) == (expected, f"case-{n}")
        writer = node.create_tenant("writer")
        status, echoed = await request_id(
            node,
            "POST",
            f"/v1/tenants/{writer.tenant_id}/ratings",
            {**writer.headers, "X-Request-Id": "bad-json", "Content-Type": "application/json"},
            data=b"{not json",
        )
        assert (status, echoed) == (400, "bad-json")

    async def test_log_lines_written_while_serving_carry_the_id(
        self, node: RunningNode, log_stream: io.StringIO
    ) -> None:
        """At debug level the answered request is logged as one JSON line with its id."""
        await request_id(node, "GET", "/healthz", {"X-Request-Id": "logged-1"})
        lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        (served,) = [line for line in lines if line.get("request_id") == "logged-1"]
        assert served["logger"] == "edge_node.web.request_ids"
        assert served["message"] == "GET /healthz answered 200"
