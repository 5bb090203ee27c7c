"""A node on loopback whose metrics the test holds, and its /metrics read back as samples."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edge_node.metrics.node import NodeMetrics
from tests.conftest import NodeFactory
from tests.support import RunningNode

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MeteredNode:
    """A running node, the NodeMetrics its app and queue report into, and a scraper."""

    node: RunningNode
    metrics: NodeMetrics

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
def make_metered(make_node: NodeFactory) -> MeteredFactory:
    """Starts nodes with configuration overrides, queue fsyncs timed into their metrics."""

    async def start(**overrides: Any) -> MeteredNode:
        metrics = NodeMetrics(
            CollectorRegistry(),
            tenant_label=overrides.get("metrics.tenant_label", False),
            serving=overrides.get("metrics.enabled", True),
        )
        node = await make_node(fsync=metrics.timed_fsync(), metrics=metrics, **overrides)
        return MeteredNode(node, metrics)

    return start


@pytest.fixture
async def metered(make_metered: MeteredFactory) -> MeteredNode:
    return await make_metered()
