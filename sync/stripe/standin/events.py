"""Events in the stand-in: v1 snapshot events for webhook endpoints, v2 thin events for event
destinations, and their delivery.

- Snapshot events (`object: "event"`, `data.object` the object as it was, and
  `data.previous_attributes` for updates) are kept for `GET /v1/events` and POSTed to every
  webhook endpoint whose `enabled_events` match (`*` for all).
- Thin events (`object: "v2.core.event"`, `created` an ISO 8601 string, `related_object`
  but no `data`) are POSTed to every event destination; `GET /v2/core/events/{id}` returns
  the whole event, `data` included, as Stripe's "fetched attributes".
- Every delivery is signed as Stripe signs: `Stripe-Signature: t=<unix>,v1=<hex>`, the
  HMAC-SHA256 of `"<t>.<body>"` keyed with the endpoint's secret, `t` from the stand-in's
  clock (never a test clock). A delivery answered with anything but a 2xx (or not
  answered) is tried again, re-signed, after 1, 2, 4 ... seconds (`retry_seconds`, doubling,
  at most `max_attempts` tries): Stripe's schedule (hours to days) compressed for tests. Order
  is not guaranteed. `acknowledged(event)` says whether every endpoint has answered 2xx,
  which holds back an invoice's finalization (sync/stripe/standin/invoices.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

API_VERSION = "2026-10-28.endive"  # the version stripe-python 16 pins
DELIVERY_TIMEOUT_SECONDS = 5.0


@dataclass
class Endpoint:
    """A webhook endpoint (snapshot events) or an event destination (thin events)."""

    id: str
    url: str
    secret: str
    thin: bool
    enabled_events: list[str] = field(default_factory=lambda: ["*"])

    def wants(self, event_type: str) -> bool:
        return any(
            pattern in ("*", event_type)
            or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
            for pattern in self.enabled_events
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "thin": self.thin,
            "enabled_events": self.enabled_events,
        }


@dataclass
class Delivery:
    endpoint: Endpoint
    event_id: str
    body: bytes
    attempts: int = 0
    due: float = 0.0  # time.monotonic()
    succeeded: bool = False
    given_up: bool = False
    last_status: int | None = None


class EventLog:
    """Events emitted by the account, and their deliveries."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.events: list[dict[str, Any]] = []
        self.thin: dict[str, dict[str, Any]] = {}
        self.endpoints: list[Endpoint] = []
        self.deliveries: list[Delivery] = []
        self.retry_seconds = 1.0
        self.max_attempts = 8

    # Endpoints.

    def add_endpoint(self, document: Mapping[str, Any], thin: bool) -> Endpoint:
        url, secret = document.get("url"), document.get("secret")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string (whsec_...)")
        events = document.get("enabled_events") or ["*"]
        endpoint = Endpoint(f"we_{secrets.token_hex(8)}", url, secret, thin, list(events))
        self.endpoints.append(endpoint)
        return endpoint

    # Emitting.

    def emit(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        created: float,
        previous_attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A snapshot event about `obj` as it is now, queued for the webhook endpoints."""
        data: dict[str, Any] = {"object": orjson.loads(orjson.dumps(obj))}
        if previous_attributes is not None:
            data["previous_attributes"] = dict(previous_attributes)
        targets = [e for e in self.endpoints if not e.thin and e.wants(event_type)]
        event: dict[str, Any] = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(created),
            "data": data,
            "livemode": False,
            "pending_webhooks": len(targets),
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        self._queue(targets, event["id"], orjson.dumps(event))
        return event

    def emit_thin(
        self, event_type: str, data: Mapping[str, Any], related: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """A thin event: stored whole, delivered without its `data`."""
        event_id = f"evt_test_{secrets.token_hex(16)}"
        notification: dict[str, Any] = {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "created": iso(self.now()),
            "livemode": False,
            "context": None,
            "reason": None,
        }
        if related is not None:
            notification["related_object"] = dict(related)
        self.thin[event_id] = {**notification, "data": dict(data), "changes": None}
        targets = [e for e in self.endpoints if e.thin and e.wants(event_type)]
        self._queue(targets, event_id, orjson.dumps(notification))
        return notification

    def _queue(self, targets: list[Endpoint], event_id: str, body: bytes) -> None:
        now = time.monotonic()
        self.deliveries.extend(Delivery(target, event_id, body, due=now) for target in targets)

    # Reading.

    def acknowledged(self, event_id: str) -> bool:
        return all(d.succeeded for d in self.deliveries if d.event_id == event_id)

    def list_events(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Newest first, by `type` (a `*` wildcard allowed) or `types`."""
        wanted = query.get("types") or ([query["type"]] if "type" in query else ["*"])
        probe = Endpoint("", "", "", False, list(wanted) if isinstance(wanted, list) else [wanted])
        return [e for e in reversed(self.events) if probe.wants(e["type"])]

    def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoint": d.endpoint.url,
                "event": d.event_id,
                "attempts": d.attempts,
                "last_status": d.last_status,
            }
            for d in self.deliveries
            if not d.succeeded and not d.given_up
        ]

    # Delivering.

    async def deliver_due(self, session: aiohttp.ClientSession) -> None:
        """Try every delivery that is due, concurrently; schedule retries for failures."""
        now = time.monotonic()
        due = [d for d in self.deliveries if not (d.succeeded or d.given_up) and d.due <= now]
        if due:
            await asyncio.gather(*(self._attempt(session, d) for d in due))

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        delivery.attempts += 1
        timestamp = int(self.now())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": signature(delivery.body, delivery.endpoint.secret, timestamp),
        }
        status = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with session.post(
                delivery.endpoint.url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS),
            ) as answer:
                status = answer.status
                await answer.read()
        delivery.last_status = status
        if status is not None and 200 <= status < 300:
            delivery.succeeded = True
            self._settled(delivery.event_id)
        elif delivery.attempts >= self.max_attempts:
            delivery.given_up = True
            self._settled(delivery.event_id)
        else:
            delivery.due = time.monotonic() + self.retry_seconds * 2 ** (delivery.attempts - 1)

    def _settled(self, event_id: str) -> None:
        for event in self.events:
            if event["id"] == event_id:
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe's `Stripe-Signature` header for `body`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def iso(seconds: float) -> str:
    """An RFC 3339 time with milliseconds, as v2 objects carry."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
