"""POST /v1/webhooks/stripe over real HTTP: who is believed, what is refused, what applies once."""

from __future__ import annotations

import asyncio
import gzip
import time

import orjson
import pytest

from edge_node.tenants.webhook_signature import signature_header
from tests.support import RunningNode
from tests.tenants.webhooks.conftest import (
    CURRENT_SECRET,
    WebhookNode,
    WebhookNodeFactory,
    invoice_event,
    subscription_event,
)


class TestAuthentication:
    async def test_a_genuine_event_is_applied(self, hooks: WebhookNode) -> None:
        """An event signed with the endpoint's secret is answered 200 and applied."""
        tenant = hooks.customer("cus_a")
        created = int(time.time())
        answer = await hooks.deliver(subscription_event("evt_1", created, "cus_a", deleted=True))
        assert (answer.status, answer.body) == (
            200,
            {"event_id": "evt_1", "outcome": "applied", "duplicate": False},
        )
        assert hooks.billing(tenant)[:2] == ("canceled", created)

    async def test_a_forged_event_is_refused_and_changes_nothing(self, hooks: WebhookNode) -> None:
        """An event signed with a secret the node does not hold is 400 invalid-signature; the
        tenant is untouched and the event id is not recorded (the real one can still come)."""
        tenant = hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a", deleted=True)
        answer = await hooks.deliver(event, secrets=("whsec_forger",))
        assert (answer.status, answer.problem) == (400, "invalid-signature")
        assert hooks.billing(tenant)[0] == "active"
        assert hooks.recorded() == []
        assert (await hooks.deliver(event)).body["outcome"] == "applied"

    async def test_a_body_changed_in_flight_is_refused(self, hooks: WebhookNode) -> None:
        """A genuine signature over another body does not authenticate this one."""
        hooks.customer("cus_a")
        genuine = orjson.dumps(subscription_event("evt_1", int(time.time()), "cus_a"))
        tampered = genuine.replace(b'"active"', b'"canceled"')
        answer = await hooks.deliver(None, body=tampered, header=_header_for(genuine))
        assert (answer.status, answer.problem) == (400, "invalid-signature")

    @pytest.mark.parametrize("header", ["", "t=1,v1=zz", "nonsense"])
    async def test_missing_or_malformed_signatures_are_400(
        self, hooks: WebhookNode, header: str
    ) -> None:
        """No usable Stripe-Signature is 400 invalid-signature, never a 5xx."""
        answer = await hooks.deliver(subscription_event("evt_1", 1, "cus_a"), header=header)
        assert (answer.status, answer.problem) == (400, "invalid-signature")

    async def test_no_signature_header_at_all_is_400(self, hooks: WebhookNode) -> None:
        """A request without the header is refused like a forgery."""
        async with hooks.node.session.post(
            hooks.node.url + "/v1/webhooks/stripe", data=b"{}"
        ) as response:
            body = await response.json(content_type=None)
        assert (response.status, body["type"]) == (400, "urn:edge-node:problem:invalid-signature")

    async def test_a_stale_signature_is_refused(self, hooks: WebhookNode) -> None:
        """A genuine signature made more than 300 s ago is 400 stale-signature: a captured
        request cannot be replayed later, even once its event id has been forgotten."""
        tenant = hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a", deleted=True)
        answer = await hooks.deliver(event, timestamp=int(time.time()) - 301)
        assert (answer.status, answer.problem) == (400, "stale-signature")
        assert hooks.billing(tenant)[0] == "active"
        assert hooks.webhooks.stats.stale_signatures == 1

    async def test_the_tolerance_is_configurable(
        self, make_webhook_node: WebhookNodeFactory
    ) -> None:
        """webhooks.tolerance_seconds bounds the accepted age of a signature."""
        hooks = await make_webhook_node(**{"webhooks.tolerance_seconds": 10})
        hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a")
        assert (await hooks.deliver(event, timestamp=int(time.time()) - 5)).status == 200
        answer = await hooks.deliver(event, timestamp=int(time.time()) - 60)
        assert (answer.status, answer.problem) == (400, "stale-signature")

    async def test_a_node_without_a_secret_takes_no_webhooks(self, node: RunningNode) -> None:
        """Without webhooks.secret_file the route answers 404 webhooks-not-configured."""
        async with node.session.post(
            node.url + "/v1/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "t=1"}
        ) as response:
            body = await response.json(content_type=None)
        assert (response.status, body["type"]) == (
            404,
            "urn:edge-node:problem:webhooks-not-configured",
        )

    async def test_no_tenant_credential_is_needed_or_used(self, hooks: WebhookNode) -> None:
        """The signature is the credential: an API key sent along changes nothing."""
        tenant = hooks.customer("cus_a")
        answer = await hooks.deliver(
            subscription_event("evt_1", int(time.time()), "cus_a"),
            extra_headers={"X-API-Key": tenant.api_key},
        )
        assert answer.status == 200


def _header_for(payload: bytes) -> str:
    return signature_header(payload, [CURRENT_SECRET], int(time.time()))


class TestBody:
    async def test_malformed_json_is_400(self, hooks: WebhookNode) -> None:
        """A genuinely signed body that is not JSON is 400 malformed-json."""
        payload = b'{"id": "evt_1",'
        answer = await hooks.deliver(None, body=payload, header=_header_for(payload))
        assert (answer.status, answer.problem) == (400, "malformed-json")

    @pytest.mark.parametrize(
        "document",
        [
            [],
            {"id": "evt_1", "type": "invoice.paid", "created": 1},
            {"id": "", "type": "invoice.paid", "created": 1, "data": {"object": {}}},
            {"id": "evt_1", "type": 7, "created": 1, "data": {"object": {}}},
            {"id": "evt_1", "type": "invoice.paid", "created": -1, "data": {"object": {}}},
            {"id": "evt_1", "type": "invoice.paid", "created": True, "data": {"object": {}}},
            {"id": "evt_1", "type": "invoice.paid", "created": 1.5, "data": {"object": {}}},
            {"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": []}},
        ],
    )
    async def test_json_that_is_not_an_event_is_400(
        self, hooks: WebhookNode, document: object
    ) -> None:
        """Signed JSON without an id, type, created time and data.object is 400 invalid-event."""
        answer = await hooks.deliver(document)
        assert (answer.status, answer.problem) == (400, "invalid-event")
        assert hooks.recorded() == []

    async def test_a_body_over_the_limit_is_413(
        self, make_webhook_node: WebhookNodeFactory
    ) -> None:
        """A body over webhooks.max_body_bytes is 413, declared length or chunked alike."""
        hooks = await make_webhook_node(**{"webhooks.max_body_bytes": 4096})
        event = subscription_event("evt_1", int(time.time()), "cus_a")
        event["data"]["object"]["padding"] = "x" * 5000
        answer = await hooks.deliver(event)
        assert (answer.status, answer.problem) == (413, "payload-too-large")

        async def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(5):
                yield b" " * 1000

        async with hooks.node.session.post(
            hooks.node.url + "/v1/webhooks/stripe",
            data=chunks(),
            headers={"Stripe-Signature": "t=1,v1=" + "0" * 64},
        ) as response:
            assert response.status == 413

    async def test_events_larger_than_the_rating_api_limit_are_taken(
        self, hooks: WebhookNode
    ) -> None:
        """The webhook has its own limit (1 MiB by default), above server.max_body_bytes:
        an invoice with many lines is not refused."""
        hooks.customer("cus_a")
        event = invoice_event("evt_1", int(time.time()), "cus_a", paid=True)
        event["data"]["object"]["lines"] = {"data": [{"id": f"il_{i}"} for i in range(2000)]}
        assert len(orjson.dumps(event)) > hooks.node.config.server.max_body_bytes
        assert (await hooks.deliver(event)).status == 200

    async def test_a_broken_compressed_body_is_400(self, hooks: WebhookNode) -> None:
        """A gzip Content-Encoding that does not decompress is 400 invalid-encoding, not 500."""
        payload = gzip.compress(b'{"id": "evt_1"}')[:-8] + b"garbage!"
        answer = await hooks.deliver(
            None,
            body=payload,
            header=_header_for(payload),
            extra_headers={"Content-Encoding": "gzip"},
        )
        assert (answer.status, answer.problem) == (400, "invalid-encoding")


class TestOnce:
    async def test_a_replayed_event_is_applied_once(self, hooks: WebhookNode) -> None:
        """The same event id delivered twice is answered 200 both times and applied once: the
        second delivery reports the first outcome as a duplicate and changes nothing, even
        after the tenant changed in between."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        failed = invoice_event("evt_failed", now - 10, "cus_a", paid=False)
        first = await hooks.deliver(failed)
        assert hooks.billing(tenant)[0] == "past_due"
        await hooks.deliver(invoice_event("evt_paid", now, "cus_a", paid=True))
        assert hooks.billing(tenant)[0] == "active"
        again = await hooks.deliver(failed)
        assert first.body == {"event_id": "evt_failed", "outcome": "applied", "duplicate": False}
        assert again.body == {"event_id": "evt_failed", "outcome": "applied", "duplicate": True}
        assert hooks.billing(tenant) == ("active", now, None)
        assert hooks.recorded() == [("evt_failed", "applied"), ("evt_paid", "applied")]
        assert hooks.webhooks.stats.duplicates == 1

    async def test_a_replay_with_a_fresh_signature_is_still_once(self, hooks: WebhookNode) -> None:
        """Stripe re-signs each retry: a new timestamp does not make the event new."""
        tenant = hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a", "past_due")
        await hooks.deliver(event, timestamp=int(time.time()) - 200)
        _, _, since = hooks.billing(tenant)
        answer = await hooks.deliver(event)
        assert answer.body["duplicate"] is True
        assert hooks.billing(tenant)[2] == since

    async def test_concurrent_deliveries_of_one_event_apply_it_once(
        self, hooks: WebhookNode
    ) -> None:
        """Several deliveries of one event at once: exactly one applies, the rest are duplicates."""
        hooks.customer("cus_a")
        event = invoice_event("evt_1", int(time.time()), "cus_a", paid=False)
        answers = await asyncio.gather(*(hooks.deliver(event) for _ in range(8)))
        assert sorted(a.body["duplicate"] for a in answers) == [False] + [True] * 7
        assert hooks.recorded() == [("evt_1", "applied")]


class TestOrdering:
    async def test_an_older_update_after_a_newer_one_changes_nothing(
        self, hooks: WebhookNode
    ) -> None:
        """Stripe does not deliver in order: a subscription.updated created before the one
        already applied is recorded as stale and leaves the tenant as the newer one set it."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        newer = subscription_event("evt_new", now, "cus_a", "canceled")
        older = subscription_event("evt_old", now - 60, "cus_a", "active")
        assert (await hooks.deliver(newer)).body["outcome"] == "applied"
        assert (await hooks.deliver(older)).body["outcome"] == "stale"
        assert hooks.billing(tenant)[:2] == ("canceled", now)
        assert hooks.recorded() == [("evt_new", "applied"), ("evt_old", "stale")]

    @pytest.mark.parametrize("order", [("failed", "deleted"), ("deleted", "failed")])
    async def test_same_second_events_end_the_same_in_either_order(
        self, hooks: WebhookNode, order: tuple[str, str]
    ) -> None:
        """Stripe's clock has whole seconds: a payment failure and a cancellation created in
        the same second leave the tenant canceled whichever arrives first."""
        tenant = hooks.customer("cus_a")
        now = int(time.time())
        events = {
            "failed": invoice_event("evt_failed", now, "cus_a", paid=False),
            "deleted": subscription_event("evt_deleted", now, "cus_a", deleted=True),
        }
        for name in order:
            await hooks.deliver(events[name])
        assert hooks.billing(tenant)[0] == "canceled"

    async def test_unknown_event_types_are_recorded_and_ignored(self, hooks: WebhookNode) -> None:
        """An event type edge-node does not act on is 200, recorded as ignored, and moves
        nothing, not even the tenant's last-event time."""
        tenant = hooks.customer("cus_a")
        event = subscription_event("evt_1", int(time.time()), "cus_a", deleted=True)
        event["type"] = "customer.updated"
        answer = await hooks.deliver(event)
        assert (answer.status, answer.body["outcome"]) == (200, "ignored")
        assert hooks.billing(tenant) == ("active", None, None)
        assert hooks.recorded() == [("evt_1", "ignored")]

    async def test_an_event_for_a_tenant_not_here_yet_is_redelivered_then_applied(
        self, hooks: WebhookNode
    ) -> None:
        """An event for no tenant on this node is answered 503 tenant-not-synced and not
        recorded, so Stripe delivers it again; once the tenant has arrived (synced down
        from another node), the redelivery applies it."""
        event = subscription_event("evt_1", int(time.time()), "cus_x", deleted=True)
        answer = await hooks.deliver(event)
        assert (answer.status, answer.problem) == (503, "tenant-not-synced")
        assert hooks.recorded() == []
        assert hooks.webhooks.stats.unknown_tenant_retries == 1
        tenant = hooks.customer("cus_x")
        answer = await hooks.deliver(event)
        assert (answer.status, answer.body["outcome"]) == (200, "applied")
        assert hooks.billing(tenant)[0] == "canceled"

    async def test_an_event_for_no_tenant_past_stripes_retries_is_recorded(
        self, hooks: WebhookNode
    ) -> None:
        """An event for no tenant here created more than webhooks.unknown_tenant_retry_hours
        (72) ago is 200 unknown_tenant and recorded: redelivering it would not help."""
        created = int(time.time()) - 73 * 3600
        answer = await hooks.deliver(subscription_event("evt_1", created, "cus_x"))
        assert (answer.status, answer.body["outcome"]) == (200, "unknown_tenant")
        assert hooks.recorded() == [("evt_1", "unknown_tenant")]
