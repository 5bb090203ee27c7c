"""The node's Stripe webhook endpoint served on loopback and registered with the stand-in,
and a batch Stripe confirms and then drops: what the webhook and meter-error tests share."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_node.config import WebhooksConfig
from edge_node.errors import TransientSyncError
from edge_node.node_database import open_node_database
from edge_node.secrets import SecretFile
from edge_node.tenants.stripe_events import BillingEventStore
from edge_node.tenants.webhooks import (
    WEBHOOK_PATH,
    StripeWebhooks,
    WebhookSecrets,
    add_webhook_routes,
)
from sync.stripe.standin import StripeStandin
from tests.sync.billing.support import BillingNode

METER_EVENTS = "POST /v1/billing/meter_events"


@contextlib.asynccontextmanager
async def webhook_endpoint(
    node: BillingNode,
    standin: StripeStandin,
    secret_dir: Path,
    secret: str,
    *,
    thin: bool,
    enabled_events: list[str] | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[sqlite3.Connection]:
    """The node's webhook endpoint on loopback, registered with the stand-in (as an event
    destination when `thin`, for `enabled_events` when given); the node.sqlite connection
    it writes with."""
    secret_file = secret_dir / "whsec"
    secret_file.write_text(secret)
    conn = open_node_database(node.data_dir)
    secrets = WebhookSecrets(SecretFile(str(secret_file), name="webhooks.secret_file"))
    config = WebhooksConfig(secret_file=str(secret_file))
    store = BillingEventStore(conn)
    app = web.Application()
    add_webhook_routes(app, StripeWebhooks(config, secrets, store, clock=clock or time.time))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    destination: dict[str, Any] = {
        "url": f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        "secret": secret,
    }
    if enabled_events is not None:
        destination["enabled_events"] = enabled_events
    standin.account.events.add_endpoint(destination, thin=thin)
    try:
        yield conn
    finally:
        await runner.cleanup()
        conn.close()


async def confirmed_then_dropped(node: BillingNode, standin: StripeStandin, tenant: str) -> str:
    """The tenant's 12 units confirmed by Stripe, which drops them afterwards (as sent for a
    customer it does not know, its asynchronous validation); the batch's identifier."""
    await node.serve(tenant, 12)
    standin.set_switches(throttle=True, only=METER_EVENTS)
    consumer = node.consumer()
    with pytest.raises(TransientSyncError):
        await consumer.run()
    [(identifier,)] = node.ledger("SELECT identifier FROM billing_ledger")
    standin.set_switches(throttle=False, only="", drop_identifiers=[identifier])
    await consumer.run_until_settled()
    assert node.states() == {"confirmed": 1}
    return identifier
