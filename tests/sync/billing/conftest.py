"""Fixtures for billing tests: a node's data directory with its queue, the stand-in, a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.billing.support import BillingNode


@pytest.fixture
async def gateway(standin: StripeStandin) -> AsyncIterator[StripeGateway]:
    """The Stripe adapter (official SDK) pointed at the stand-in, with a short timeout."""
    adapter = StripeGateway(lambda: DEFAULT_API_KEY, api_base=standin.url, timeout_seconds=1)
    yield adapter
    await adapter.close()


@pytest.fixture
async def node(
    tmp_path: Path, gateway: StripeGateway, standin: StripeStandin
) -> AsyncIterator[BillingNode]:
    """A node's data directory: node.sqlite and the usage queue, billing to the stand-in."""
    opened = await BillingNode.open(tmp_path / "node", gateway, standin)
    yield opened
    await opened.close()
