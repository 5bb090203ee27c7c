"""Metrics of the leases this node holds of fleet-wide allowances (edge_node.usage.leases).

`edge_node_quota_overshoot_bound_units` is this node's share of the bound on how far past a
`block` allowance the fleet can serve in the current period: units it holds that the central
database does not know it spent, plus the partition units of tenants under the `local`
policy. Summed over every node of a fleet (`sum(edge_node_quota_overshoot_bound_units)`), it
bounds the fleet's overshoot (docs/quotas.md, "Several nodes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_node import clock
from edge_node.usage.leases import LeaseBook, boottime_ns, lease_state, overshoot_bound
from edge_node.usage.quotas import calendar_month


class LeaseCollector(Collector):
    """Reads the leases file at each scrape."""

    def __init__(self, book: LeaseBook, clock_ms: Callable[[], int] = clock.now_ms) -> None:
        self._book = book
        self._clock_ms = clock_ms

    def collect(self) -> Iterator[Metric]:
        start_ms, _ = calendar_month(self._clock_ms())
        leases = [lease for lease in self._book.all() if lease.period_start_ms == start_ms]
        bound = GaugeMetricFamily(
            "edge_node_quota_overshoot_bound_units",
            "Units of fleet-wide `block` allowances this node may serve in the current period"
            " beyond what the central database knows it spent (leases held unreported, plus"
            " partition allowances); summed over the fleet, the bound on its overshoot.",
        )
        bound.add_metric([], overshoot_bound(leases, start_ms))
        yield bound
        states = GaugeMetricFamily(
            "edge_node_quota_leases",
            "Tenants whose fleet-wide allowance this node holds a lease of in the current"
            " period: `live`, `cut_off` (the central database out of reach) or `lapsed` (past"
            " its deadline: nothing more is spent from it).",
            labels=["state"],
        )
        now = boottime_ns()
        counts = {"live": 0, "cut_off": 0, "lapsed": 0}
        for lease in leases:
            counts[lease_state(lease, start_ms, now)] += 1
        for state, count in counts.items():
            states.add_metric([state], count)
        yield states
