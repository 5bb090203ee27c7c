"""Fixtures for Stripe tests: the stand-in on loopback, a gateway to it, a bootstrapped catalog."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import stripe

from edge_node.node_database import open_node_database
from edge_node.tenants.registry import TenantRegistry
from sync.stripe.catalog import BillingCatalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.stripe.standin_support import Catalog, Receiver, make_catalog, plain_client
from tests.sync.stripe.support import StandinProcess

METER_EVENT = "edge_node_requests"


@pytest.fixture
async def gateway(standin: StripeStandin) -> AsyncIterator[StripeGateway]:
    """The adapter pointed at the stand-in, with short timeouts and no SDK retries."""
    adapter = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=10)
    yield adapter
    await adapter.close()


@pytest.fixture
async def catalog(gateway: StripeGateway) -> BillingCatalog:
    return await gateway.bootstrap(meter_event_name=METER_EVENT)


@pytest.fixture
def node_database(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = open_node_database(tmp_path / "node")
    yield opened
    opened.close()


@pytest.fixture
def registry(node_database: sqlite3.Connection) -> TenantRegistry:
    return TenantRegistry(node_database)


@pytest.fixture
def standin_process() -> Iterator[StandinProcess]:
    """The stand-in as its own process, controlled over its admin API."""
    process = StandinProcess.start()
    yield process
    process.stop()


@pytest.fixture
async def client(standin: StripeStandin) -> AsyncIterator[stripe.StripeClient]:
    """A plain StripeClient on the stand-in: no adapter in between, no retries."""
    async with plain_client(standin) as made:
        yield made


@pytest.fixture
async def prices(client: stripe.StripeClient) -> Catalog:
    """A meter and per-unit, graduated and flat monthly prices, made through the SDK."""
    return await make_catalog(client)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on loopback."""
    started = await Receiver().start()
    yield started
    await started.stop()
