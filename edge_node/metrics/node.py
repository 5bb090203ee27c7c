"""Prometheus metrics of one node process, served at GET /metrics (docs/metrics.md).

NodeMetrics owns the metrics of one process in the CollectorRegistry it is given (tests
build a fresh one and read samples back). On the request path it costs one call from the
node's front (`edge_node.http.front`) that counts and times the answer in plain dicts
(`edge_node.metrics.requests`), labelled by the route template (never the raw path, so a
scanner cannot create series). Everything else is read only when Prometheus scrapes: the
queue's counters and a status snapshot, the meter's, the sync worker's and the usage flush's
through the Protocols of `edge_node.metrics.sources`, the webhooks' counters and the tenants
by status. Fsync durations come from a timing wrapper around the fsync the queue is opened
with, so `edge_node.queue` imports nothing.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

import edge_node
from edge_node.errors import NotFound
from edge_node.metrics.collector import SourceCollector
from edge_node.metrics.requests import RequestTally
from edge_node.metrics.sources import (
    BillingCounters,
    MeterCounts,
    Sources,
    SyncStatusSource,
    WebhookCounts,
)
from edge_node.queue import QueueError, WriteAheadQueue
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.room import DiskFloor

METRICS_PATH = "/metrics"
# Request latency: a score read takes well under 1 ms; a strict write waits for a group
# commit's fsync (about 1 ms on a local SSD, far more on a busy or network disk).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class NodeMetrics:
    """The metrics of one node process, registered in `registry`.

    `tenant_label` adds the admitted tenant's id as a label to the request and rate-limit
    counters (metrics.tenant_label; an operator's choice: one series per tenant). `serving`
    False answers /metrics with 404 (metrics.enabled).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        tenant_label: bool = False,
        serving: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.tenant_label = tenant_label
        self.serving = serving
        self.requests = RequestTally(LATENCY_BUCKETS, tenant_label)
        registry.register(self.requests)
        self.fsync_duration = Histogram(
            "edge_node_queue_fsync_duration_seconds",
            "Duration of each fsync of the usage queue (segments, directory, cursors).",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        )
        build = Gauge(
            "edge_node_build_info",
            "Always 1; the labels name the running build.",
            ("version", "python"),
            registry=registry,
        )
        build.labels(_version(), platform.python_version()).set(1)
        self.sources = Sources()
        self._clock = clock
        self._tenant_counter: Callable[[], dict[str, int]] | None = None
        self._provisioning_counter: Callable[[], dict[str, int]] = dict
        self._queue: WriteAheadQueue | None = None
        registry.register(SourceCollector(self.sources, clock))
        ProcessCollector(registry=registry)

    # Sources, attached by whoever owns them.

    def watch_queue(self, queue: WriteAheadQueue) -> None:
        """The usage queue: its counters, and a status snapshot taken at each scrape."""
        self._queue = queue
        self.sources.queue_stats = queue.stats
        self.sources.queue_failed = lambda: queue.write_failure is not None

    def watch_meter(self, stats: MeterCounts) -> None:
        self.sources.meter = stats

    def watch_disk_floor(self, floor: DiskFloor) -> None:
        """The free-space floor of the data directory's filesystem."""
        self.sources.disk_room = lambda: (floor.free_bytes(), floor.floor_bytes)

    def watch_sync(self, worker: SyncStatusSource) -> None:
        """The sync worker: lag, failures and rows per PostgreSQL shard and per Stripe job."""
        self.sources.sync = worker
        self.sources.sync_watched_at = self._clock()

    def watch_billing(self, stats: BillingCounters) -> None:
        """A usage flush (one per queue): meter-event batches confirmed and set aside."""
        self.sources.billing.append(stats)

    def watch_published_billing(self, read: Callable[[], Sequence[BillingCounters]]) -> None:
        """Usage flushes of another process of the node, as `read` finds them at each scrape."""
        self.sources.billing_published = read

    def watch_webhooks(self, stats: WebhookCounts) -> None:
        self.sources.webhooks = stats

    def watch_quota_thresholds(self, crossed: Mapping[int, int]) -> None:
        """Allowance thresholds (percent) this process recorded (edge_node.usage.thresholds)."""
        self.sources.quota_thresholds = crossed

    def watch_tenants(self, registry: TenantRegistry) -> None:
        """Tenants by status, and those not provisioned in Stripe, counted in node.sqlite at
        each scrape."""
        self._tenant_counter = registry.count_by_status
        self._provisioning_counter = registry.provisioning_counts

    def timed_fsync(self, fsync: Callable[[int], None] = os.fsync) -> Callable[[int], None]:
        """`fsync`, observed into edge_node_queue_fsync_duration_seconds (thread-safe)."""
        observe = self.fsync_duration.observe

        def timed(fd: int) -> None:
            started = time.perf_counter()
            try:
                fsync(fd)
            finally:
                observe(time.perf_counter() - started)

        return timed

    # The request path.

    def observe(self, method: str, route: str, status: int, seconds: float, tenant: str) -> None:
        """Count one answered request and its latency (on the event loop)."""
        self.requests.observe(method, route, status, seconds, tenant)

    def observe_request(
        self,
        method: str,
        resource: web.AbstractResource | None,
        status: int,
        started: float,
        tenant_id: str | None,
    ) -> None:
        """Count one answer to a request for `resource` (None: no route matched) and its
        latency since `started` (perf_counter); `tenant_id` the tenant it was admitted for."""
        route = UNMATCHED_ROUTE if resource is None else resource.canonical
        method = method if method in METHODS else "OTHER"
        seconds = time.perf_counter() - started
        self.requests.observe(method, route, status, seconds, tenant_id or "")

    # Scraping.

    async def refresh(self) -> None:
        """Take the snapshots the collector reads: the queue's status, tenants by status."""
        if self._queue is not None:
            try:
                self.sources.queue_status = await self._queue.status()
            except QueueError:
                self.sources.queue_status = None  # closing: its gauges go away
        if self._tenant_counter is not None:
            try:
                self.sources.tenants = self._tenant_counter()
                self.sources.unprovisioned = self._provisioning_counter()
            except sqlite3.Error:
                self.sources.tenants = self.sources.unprovisioned = None

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every metric in the registry."""
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", NodeMetrics)


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    """GET /metrics: no credential, not billed, not rate limited."""
    metrics = request.app[METRICS_KEY]
    if not metrics.serving:
        raise NotFound("metrics are off on this node (metrics.enabled)", slug="metrics-disabled")
    await metrics.refresh()
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def add_metrics_route(app: web.Application, metrics: NodeMetrics) -> None:
    app[METRICS_KEY] = metrics
    app.router.add_get(METRICS_PATH, metrics_endpoint, allow_head=False)


def _version() -> str:
    try:
        return metadata.version("edge-node")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return edge_node.__version__
