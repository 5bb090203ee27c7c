"""A node taking Stripe webhooks on loopback, and Stripe events signed the way Stripe signs them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from edge_node.http.app import SECRETS_KEY
from edge_node.secrets import SecretFiles
from edge_node.tenants.webhook_signature import signature_header
from edge_node.tenants.webhooks import WEBHOOK_PATH, WEBHOOKS_KEY, StripeWebhooks
from tests.support import RunningNode, SigningKeys, Tenant, node_config, start_node

CURRENT_SECRET = "whsec_current_4f1c9a0b7e2d5c8a3b6e9d0c1f2a"
PREVIOUS_SECRET = "whsec_previous_8b3d6f0a2c5e7b9d1f4a6c8e0b2d"
PROBLEM = "urn:edge-node:problem:"


@dataclass
class Delivery:
    """The node's answer to one webhook delivery."""

    status: int
    body: Any

    @property
    def problem(self) -> str:
        assert self.status >= 400, self.body
        return str(self.body["type"]).removeprefix(PROBLEM)


@dataclass
class WebhookNode:
    """A running node with `webhooks.secret_file` (and maybe a previous secret) configured."""

    node: RunningNode
    runner: web.AppRunner
    secret_path: Path
    previous_path: Path

    @property
    def secrets(self) -> SecretFiles:
        return self.runner.app[SECRETS_KEY]

    @property
    def webhooks(self) -> StripeWebhooks:
        return self.runner.app[WEBHOOKS_KEY]

    def customer(self, customer_id: str, name: str = "acme") -> Tenant:
        """A tenant linked to Stripe customer `customer_id` (what provisioning records)."""
        tenant = self.node.create_tenant(name)
        self.node.storage.node_database.execute(
            "UPDATE tenants SET stripe_customer_id = ? WHERE tenant_id = ?",
            (customer_id, tenant.tenant_id),
        )
        return tenant

    def billing(self, tenant: Tenant) -> tuple[str, int | None, int | None]:
        """The tenant's (status, billing_event_created, past_due_since) in node.sqlite."""
        row = self.node.storage.node_database.execute(
            "SELECT status, billing_event_created, past_due_since FROM tenants WHERE tenant_id = ?",
            (tenant.tenant_id,),
        ).fetchone()
        return row[0], row[1], row[2]

    def recorded(self) -> list[tuple[str, str]]:
        """Every (event_id, outcome) in webhook_events, in the order received."""
        rows = self.node.storage.node_database.execute(
            "SELECT event_id, outcome FROM webhook_events ORDER BY received_at, event_id"
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    async def deliver(
        self,
        event: Any,
        *,
        secrets: tuple[str, ...] = (CURRENT_SECRET,),
        timestamp: int | None = None,
        header: str | None = None,
        body: bytes | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Delivery:
        """POST `event` signed with `secrets` at `timestamp` (now), or with `header` as given."""
        payload = orjson.dumps(event) if body is None else body
        if header is None:
            header = signature_header(
                payload, secrets, int(time.time()) if timestamp is None else timestamp
            )
        headers = {"Content-Type": "application/json", "Stripe-Signature": header}
        headers.update(extra_headers or {})
        async with self.node.session.post(
            self.node.url + WEBHOOK_PATH, data=payload, headers=headers
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                assert response.content_type == "application/problem+json"
            return Delivery(response.status, orjson.loads(raw) if raw else None)

    async def get(self, tenant: Tenant, path: str = "/ratings") -> Delivery:
        async with self.node.session.get(
            self.node.tenant_url(tenant.tenant_id, path), headers=tenant.headers
        ) as response:
            return Delivery(response.status, await response.json(content_type=None))


WebhookNodeFactory = Callable[..., Awaitable[WebhookNode]]


@pytest.fixture
async def make_webhook_node(
    tmp_path: Path, signing_keys: SigningKeys
) -> AsyncIterator[WebhookNodeFactory]:
    """Starts nodes whose secret file holds CURRENT_SECRET and, when `previous` is a string,
    with a previous-secret file holding it, plus configuration overrides (dotted keys)."""
    started: list[WebhookNode] = []

    async def start(*, previous: str | None = None, **overrides: Any) -> WebhookNode:
        directory = tmp_path / f"node{len(started)}"
        directory.mkdir()
        secret_path, previous_path = directory / "whsec", directory / "whsec.previous"
        secret_path.write_text(CURRENT_SECRET + "\n")
        overrides = {"webhooks.secret_file": str(secret_path), **overrides}
        if previous is not None:
            previous_path.write_text(previous)
            overrides["webhooks.previous_secret_file"] = str(previous_path)
        config = node_config(directory / "var", signing_keys, **overrides)
        running, runner = await start_node(config, signing_keys)
        started.append(WebhookNode(running, runner, secret_path, previous_path))
        return started[-1]

    yield start
    for hooks in reversed(started):
        await hooks.node.session.close()
        await hooks.runner.cleanup()
        await hooks.node.meter.close()
        hooks.node.storage.close()


@pytest.fixture
async def hooks(make_webhook_node: WebhookNodeFactory) -> WebhookNode:
    """A node taking webhooks signed with CURRENT_SECRET, default configuration otherwise."""
    return await make_webhook_node()


def subscription_event(
    event_id: str,
    created: int,
    customer: str,
    status: str = "active",
    *,
    deleted: bool = False,
    subscription: str = "sub_1",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A customer.subscription.updated (or .deleted) event as Stripe sends it, trimmed."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": "customer.subscription.deleted" if deleted else "customer.subscription.updated",
        "data": {
            "object": {
                "id": subscription,
                "object": "subscription",
                "customer": customer,
                "status": "canceled" if deleted else status,
                "metadata": metadata or {},
            }
        },
    }


def invoice_event(
    event_id: str, created: int, customer: str, *, paid: bool, subscription: str = "sub_1"
) -> dict[str, Any]:
    """An invoice.paid or invoice.payment_failed event (API 2025-03-31.basil shape), trimmed."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": "invoice.paid" if paid else "invoice.payment_failed",
        "data": {
            "object": {
                "id": f"in_{event_id}",
                "object": "invoice",
                "customer": customer,
                "status": "paid" if paid else "open",
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": subscription, "metadata": {}},
                },
            }
        },
    }
