"""`POST /v1/webhooks/stripe`: Stripe events, authenticated by signature, each applied once.

No tenant credential: the `Stripe-Signature` header is the credential (webhook_signature.py),
checked against the current signing secret and, during a rotation, the previous one; both
live in files that reload without a restart (secrets.py). In order, a request must: reach a
node with a signing secret (404), have a body within `webhooks.max_body_bytes` (413), carry a
signature of that body by one of our secrets (400 `invalid-signature`) made within the
tolerance (400 `stale-signature`), and hold a JSON Stripe event (400 `malformed-json`,
`invalid-event`). An event about a tenant this node does not know yet is answered 503
`tenant-not-synced` and not recorded, so that Stripe's redelivery can apply it once the
tenant has synced down (until `webhooks.unknown_tenant_retry_hours` after the event). Else it
is answered 200 whatever the event does: applied, stale, ignored, or already received
(`duplicate`); Stripe retries anything else for days. A thin event notification (an event
destination's, `object: "v2.core.event"`) passes the same signature checks and is recorded
once for the sync worker to fetch and apply (thin_events.py).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from edge_node.config import WebhooksConfig
from edge_node.errors import BadRequest, ConfigError, NotFound, ServiceUnavailable
from edge_node.secrets import SecretFile, SecretFiles
from edge_node.tenants.standing import OUTCOMES, parse_event
from edge_node.tenants.stripe_events import BillingEventStore, Receipt, TenantNotHereYet
from edge_node.tenants.thin_events import ThinEvent, ThinEventStore, is_thin, parse_thin_event
from edge_node.tenants.webhook_signature import (
    SIGNATURE_HEADER,
    SignatureError,
    StaleSignature,
    verify,
)
from edge_node.web.answers import json_response, read_body

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/v1/webhooks/stripe"


class WebhookSecrets:
    """The endpoint's signing secrets: the current one, and the previous one during a rotation."""

    def __init__(self, current: SecretFile, previous: SecretFile | None = None) -> None:
        self.current = current
        self.previous = previous

    def values(self) -> list[str]:
        """The secrets in force now; an empty previous-secret file means none."""
        values = [self.current.value()]
        if self.previous is not None and self.previous.value():
            values.append(self.previous.value())
        return values


def open_webhook_secrets(config: WebhooksConfig, files: SecretFiles) -> WebhookSecrets | None:
    """The configured secrets, read now (ConfigError if unreadable); None without secret_file."""
    if not config.secret_file:
        if config.previous_secret_file:
            raise ConfigError(
                "webhooks.previous_secret_file is set but webhooks.secret_file is not"
            )
        return None
    current = files.open(config.secret_file, name="webhooks.secret_file")
    previous = None
    if config.previous_secret_file:
        previous = files.open(
            config.previous_secret_file, name="webhooks.previous_secret_file", allow_empty=True
        )
    return WebhookSecrets(current, previous)


@dataclass
class WebhookStats:
    """Counts since start, by what became of each request."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    duplicates: int = 0
    forged: int = 0
    stale_signatures: int = 0
    verified_with_previous: int = 0
    unknown_tenant_retries: int = 0
    thin_events: dict[str, int] = field(default_factory=dict)  # by state: pending, ignored


class StripeWebhooks:
    """The webhook endpoint's state: secrets, where events are applied, and counts."""

    def __init__(
        self,
        config: WebhooksConfig,
        secrets: WebhookSecrets | None,
        store: BillingEventStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.store = store
        self.thin_events = ThinEventStore(store.conn)
        self.stats = WebhookStats()
        self._clock = clock
        # Set once node.sqlite is deleted or replaced underneath (edge_node.http.app): an event
        # applied now would go to a file no command reads, and a 2xx would stop Stripe's
        # redeliveries, so every event is refused until the node restarts on the right file.
        self.displaced: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.displaced is not None:
            raise ServiceUnavailable(
                self.displaced, slug="not-ready", headers={"Retry-After": "60"}
            )
        if self.secrets is None:
            raise NotFound(
                "this node takes no Stripe webhooks: webhooks.secret_file is not set",
                slug="webhooks-not-configured",
            )
        # A request is judged by the secrets in force when it arrived: a rotation while its
        # body is still on the way does not fail it.
        secrets = self.secrets.values()
        payload = await read_body(request, self.config.max_body_bytes, "webhooks.max_body_bytes")
        self._verify(payload, request.headers.get(SIGNATURE_HEADER), secrets)
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}", slug="malformed-json") from None
        if is_thin(document):
            return self._record_thin(parse_thin_event(document))
        event = parse_event(document)
        hold_since = self._clock() - self.config.unknown_tenant_retry_hours * 3600
        try:
            receipt = self.store.apply(event, hold_unknown_since=int(hold_since))
        except TenantNotHereYet:
            self.stats.unknown_tenant_retries += 1
            log.warning(
                "stripe event %s (%s) is about a tenant this node does not know yet;"
                " answered 503 so that Stripe delivers it again",
                event.event_id,
                event.type,
            )
            raise ServiceUnavailable(
                "no tenant on this node matches the event's customer or metadata yet (it may"
                " not have synced down); deliver it again later",
                slug="tenant-not-synced",
                headers={"Retry-After": "60"},
            ) from None
        except sqlite3.Error as exc:
            log.error("stripe event %s not applied: node.sqlite failed: %s", event.event_id, exc)
            raise ServiceUnavailable(
                "the event could not be recorded; Stripe will deliver it again",
                slug="storage-unavailable",
                headers={"Retry-After": "5"},
            ) from None
        self._count(receipt, event.type)
        return json_response(receipt.to_json())

    def _record_thin(self, event: ThinEvent) -> web.StreamResponse:
        """Record a thin event notification for the sync worker, which fetches and applies
        it (edge_node/tenants/thin_events.py): never a call to Stripe on the request path."""
        try:
            state, duplicate = self.thin_events.record(event, int(self._clock() * 1e6))
        except sqlite3.Error as exc:
            log.error(
                "stripe thin event %s not recorded: node.sqlite failed: %s", event.event_id, exc
            )
            raise ServiceUnavailable(
                "the event could not be recorded; Stripe will deliver it again",
                slug="storage-unavailable",
                headers={"Retry-After": "5"},
            ) from None
        if duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.thin_events[state] = self.stats.thin_events.get(state, 0) + 1
            log.info("stripe thin event %s (%s) received: %s", event.event_id, event.type, state)
        return json_response({"event_id": event.event_id, "outcome": state, "duplicate": duplicate})

    def _verify(self, payload: bytes, header: str | None, secrets: list[str]) -> None:
        try:
            verified = verify(
                payload,
                header,
                secrets,
                now=self._clock(),
                tolerance=self.config.tolerance_seconds,
            )
        except StaleSignature as exc:
            self.stats.stale_signatures += 1
            raise BadRequest(str(exc), slug="stale-signature") from None
        except SignatureError as exc:
            self.stats.forged += 1
            raise BadRequest(str(exc), slug="invalid-signature") from None
        if verified.secret_index > 0:
            self.stats.verified_with_previous += 1

    def _count(self, receipt: Receipt, event_type: str) -> None:
        if receipt.duplicate:
            self.stats.duplicates += 1
            return
        self.stats.outcomes[receipt.outcome] += 1
        if receipt.outcome == "applied":
            log.info(
                "stripe event %s (%s) applied to tenant %s",
                receipt.event_id,
                event_type,
                receipt.tenant_id,
            )


WEBHOOKS_KEY = web.AppKey("stripe_webhooks", StripeWebhooks)


async def stripe_webhook(request: web.Request) -> web.StreamResponse:
    return await request.app[WEBHOOKS_KEY].handle(request)


def add_webhook_routes(app: web.Application, webhooks: StripeWebhooks) -> None:
    app[WEBHOOKS_KEY] = webhooks
    app.router.add_post(WEBHOOK_PATH, stripe_webhook)
