"""Allowance thresholds: 80% and 100% recorded once per tenant and period, and counted."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edge_node.node_database import open_node_database
from edge_node.usage.thresholds import ThresholdLog
from tests.admission.test_quotas import create, read
from tests.support import RunningNode

TENANT = "11111111-1111-4111-8111-111111111111"


class TestThresholdLog:
    def test_each_threshold_is_recorded_once_per_period_whoever_sees_it(
        self, tmp_path: Path
    ) -> None:
        """Two processes (two connections) see 80% and then 100%: one row each, counted once
        between them; a new period records them again."""
        with (
            contextlib.closing(open_node_database(tmp_path)) as one,
            contextlib.closing(open_node_database(tmp_path)) as two,
        ):
            first, second = ThresholdLog(one), ThresholdLog(two)
            first.check(TENANT, 0, 79, 100, 1)
            assert first.crossed_in(TENANT, 0) == []
            for log in (first, second, first):
                log.check(TENANT, 0, 85, 100, 2)
            second.check(TENANT, 0, 100, 100, 3)
            first.check(TENANT, 0, 120, 100, 4)
            crossed = first.crossed_in(TENANT, 0)
            assert [(row["threshold"], row["spent"]) for row in crossed] == [(80, 85), (100, 100)]
            assert first.crossed[80] + second.crossed[80] == 1
            assert first.crossed[100] + second.crossed[100] == 1
            first.check(TENANT, 1000, 100, 100, 5)
            assert len(first.crossed_in(TENANT, 1000)) == 2


class TestThresholdsServed:
    async def test_a_tenant_reaching_its_allowance_is_counted_in_the_metric(
        self, node: RunningNode
    ) -> None:
        """An allowance of 5: the request after the 4th records 80%, after the 5th 100%;
        /metrics counts each once however many requests follow."""
        tenant = create(node, quota=5, quota_policy="block")
        statuses = [(await read(node, tenant)).status for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        async with node.session.get(f"{node.url}/metrics") as response:
            text = await response.text()
        assert 'edge_node_quota_thresholds_crossed_total{threshold="80"} 1.0' in text
        assert 'edge_node_quota_thresholds_crossed_total{threshold="100"} 1.0' in text
