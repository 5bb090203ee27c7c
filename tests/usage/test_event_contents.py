"""What a usage event carries (docs/security.md, "Queue and ledger"): the documented fields
only, and never a secret or any request content."""

from __future__ import annotations

import dataclasses
import uuid

import orjson

from edge_node.cli.daemon import queue_directory
from edge_node.queue import tail_records
from edge_node.usage.event import UsageEvent
from tests.support import RunningNode

DOCUMENTED_FIELDS = {
    "event_id",
    "tenant_id",
    "node_id",
    "operation",
    "status",
    "units",
    "timestamp_ms",
    "request_id",
}


class TestUsageEventContents:
    def test_the_event_has_exactly_the_documented_fields(self) -> None:
        """UsageEvent's fields are the eight docs/security.md lists, nothing more."""
        assert {f.name for f in dataclasses.fields(UsageEvent)} == DOCUMENTED_FIELDS

    async def test_a_served_write_queues_no_comment_no_credential_no_content(
        self, node: RunningNode
    ) -> None:
        """A POST with a comment, by API key, and a GET by JWT queue one event each with
        the documented fields; the queue's files hold neither the comment, the user or item
        ids, the API key nor the token."""
        tenant = node.create_tenant()
        comment = f"private words {uuid.uuid4()}"
        body = {"user_id": "user-secretive", "item_id": "item-hidden", "score": 2}
        async with node.session.post(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers=tenant.headers,
            json={**body, "comment": comment},
        ) as response:
            assert response.status == 201
        token = node.token(tenant.tenant_id, "reader")
        async with node.session.get(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200

        directory = queue_directory(node.config)
        events = [orjson.loads(r.payload) for r in tail_records(directory, 100)]
        assert [e["operation"] for e in events] == ["rating.create", "rating.list"]
        for event in events:
            assert set(event) == DOCUMENTED_FIELDS
            assert event["tenant_id"] == tenant.tenant_id
            assert event["node_id"] == node.config.node_id
        stored = b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())
        for secret in (comment, tenant.api_key, token, "user-secretive", "item-hidden"):
            assert secret.encode() not in stored, secret
