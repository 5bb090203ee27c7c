"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import RunningNode, SigningKeys, make_signing_keys, node_config, start_node


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return make_signing_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
async def node(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[RunningNode]:
    """A fresh edge node on loopback with its own data directory."""
    running, runner = await start_node(node_config(tmp_path / "var", signing_keys), signing_keys)
    try:
        yield running
    finally:
        await running.session.close()
        await runner.cleanup()
        running.storage.close()
