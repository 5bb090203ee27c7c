"""Requests counted and timed as plain numbers on the event loop, exported when scraped.

prometheus_client's Counter and Histogram take a lock on every increment, so that threads
may share them; every request would pay for three of them. Requests are only ever answered
on the event loop's thread, so their counts and latency buckets are kept here in plain
dicts and lists, and turned into metric families when Prometheus scrapes (on that same
thread, so a scrape never sees a half-made update).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(slots=True)
class _Latency:
    """One histogram series: a count per bucket (the last is +Inf) and the sum."""

    buckets: list[int]
    total: float = 0.0


@dataclass(eq=False)  # registered in a registry by identity
class RequestTally(Collector):
    """Counts per (method, route, status, tenant), latencies per (method, route), 429s per
    tenant. `tenant_label` False keeps the tenant out of every label set."""

    bounds: Sequence[float]
    tenant_label: bool = False
    requests: dict[tuple[str, str, int, str], int] = field(default_factory=dict)
    latencies: dict[tuple[str, str], _Latency] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)

    def observe(self, method: str, route: str, status: int, seconds: float, tenant: str) -> None:
        """Count one answered request and its latency (event loop only)."""
        if not self.tenant_label:
            tenant = ""
        key = (method, route, status, tenant)
        self.requests[key] = self.requests.get(key, 0) + 1
        latency = self.latencies.get((method, route))
        if latency is None:
            latency = self.latencies[method, route] = _Latency([0] * (len(self.bounds) + 1))
        latency.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        latency.total += seconds
        if status == 429:
            self.rate_limited[tenant] = self.rate_limited.get(tenant, 0) + 1

    def collect(self) -> Iterator[Metric]:
        tenant = ["tenant"] if self.tenant_label else []
        requests = CounterMetricFamily(
            "edge_node_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status", *tenant],
        )
        for (method, route, status, who), count in list(self.requests.items()):
            requests.add_metric([method, route, str(status), *([who] if tenant else [])], count)
        yield requests
        latency = HistogramMetricFamily(
            "edge_node_http_request_duration_seconds",
            "Time from a request's arrival at the app to its answer, by method and route.",
            labels=["method", "route"],
        )
        bounds = [repr(float(bound)) for bound in self.bounds] + ["+Inf"]
        for (method, route), series in list(self.latencies.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([method, route], cumulative, series.total)
        yield latency
        limited = CounterMetricFamily(
            "edge_node_rate_limited_requests",
            "Requests refused with 429 by their tenant's token bucket.",
            labels=tenant,
        )
        if not self.tenant_label:
            limited.add_metric([], self.rate_limited.get("", 0))
        else:
            for who, count in list(self.rate_limited.items()):
                limited.add_metric([who], count)
        yield limited
