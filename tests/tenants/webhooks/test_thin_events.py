"""Thin event notifications (an event destination's) at the webhook endpoint: the same
signature and dedupe rules as snapshot events, recorded once for the sync worker."""

from __future__ import annotations

from typing import Any

from edge_node.tenants.thin_events import ThinEventStore
from tests.tenants.webhooks.conftest import WebhookNode

REPORT = "v1.billing.meter.error_report_triggered"


def thin(event_id: str, event_type: str = REPORT, created: Any = "2026-12-07T03:00:00.000Z") -> Any:
    """A thin event notification as Stripe sends it: no `data`."""
    return {
        "id": event_id,
        "object": "v2.core.event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "related_object": {
            "id": "mtr_1",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_1",
        },
    }


def store(hooks: WebhookNode) -> ThinEventStore:
    return ThinEventStore(hooks.node.storage.node_database)


class TestThinEvents:
    async def test_a_meter_error_report_is_recorded_for_the_sync_worker(
        self, hooks: WebhookNode
    ) -> None:
        """A genuine notification is answered 200 and waits, pending, to be fetched."""
        answer = await hooks.deliver(thin("evt_thin_1"))
        assert answer.status == 200
        assert answer.body == {"event_id": "evt_thin_1", "outcome": "pending", "duplicate": False}
        assert [e.event_id for e in store(hooks).pending()] == ["evt_thin_1"]

    async def test_a_replayed_notification_is_recorded_once(self, hooks: WebhookNode) -> None:
        """A second delivery of one notification is a duplicate and changes nothing."""
        await hooks.deliver(thin("evt_thin_2"))
        answer = await hooks.deliver(thin("evt_thin_2"))
        assert answer.body["duplicate"] is True
        assert len(store(hooks).pending()) == 1
        assert hooks.webhooks.stats.duplicates == 1

    async def test_a_type_the_node_does_not_apply_is_recorded_and_ignored(
        self, hooks: WebhookNode
    ) -> None:
        """Another thin event type is answered 200 and never fetched."""
        answer = await hooks.deliver(thin("evt_thin_3", "v1.billing.meter.something_else"))
        assert answer.body["outcome"] == "ignored"
        assert store(hooks).pending() == []

    async def test_a_forged_notification_is_refused_and_recorded_nowhere(
        self, hooks: WebhookNode
    ) -> None:
        """A notification signed with another secret is 400 invalid-signature."""
        answer = await hooks.deliver(thin("evt_thin_4"), secrets=("whsec_someone_else",))
        assert answer.status == 400
        assert answer.problem == "invalid-signature"
        assert store(hooks).state("evt_thin_4") is None

    async def test_a_notification_without_a_readable_time_is_400(self, hooks: WebhookNode) -> None:
        """A thin notification's created is an ISO time with its zone; anything else is
        400 invalid-event and nothing is recorded."""
        for created in (1_765_000_000, "yesterday", "2026-12-07T03:00:00"):
            answer = await hooks.deliver(thin("evt_thin_5", created=created))
            assert answer.status == 400
            assert answer.problem == "invalid-event"
        assert store(hooks).state("evt_thin_5") is None
