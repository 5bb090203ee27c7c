"""A node on loopback whose metrics the test holds, and its /metrics read back as samples."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edge_node.app import node_metrics
from edge_node.metrics import NodeMetrics
from tests.support import RunningNode, SigningKeys, node_config, start_node

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MeteredNode:
    """A running node, the NodeMetrics its app and queue report into, and a scraper."""

    node: RunningNode
    metrics: NodeMetrics
    runner: web.AppRunner

    async def scrape(self) -> Samples:
        async with self.node.session.get(f"{self.node.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        return parse_samples(text)

    async def value(self, name: str, **labels: str) -> float | None:
        return (await self.scrape()).get((name, frozenset(labels.items())))


def parse_samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


MeteredFactory = Callable[..., Awaitable[MeteredNode]]


@pytest.fixture
async def make_metered(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[MeteredFactory]:
    """Starts nodes with configuration overrides, queue fsyncs timed into their metrics."""
    started: list[MeteredNode] = []

    async def start(**overrides: Any) -> MeteredNode:
        config = node_config(tmp_path / f"var{len(started)}", signing_keys, **overrides)
        metrics = node_metrics(config)
        node, runner = await start_node(
            config, signing_keys, fsync=metrics.timed_fsync(), metrics=metrics
        )
        started.append(MeteredNode(node, metrics, runner))
        return started[-1]

    yield start
    for metered in reversed(started):
        await metered.node.session.close()
        await metered.runner.cleanup()
        await metered.node.meter.close()
        metered.node.storage.close()


@pytest.fixture
async def metered(make_metered: MeteredFactory) -> MeteredNode:
    return await make_metered()
