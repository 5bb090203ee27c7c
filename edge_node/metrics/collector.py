"""The collector of the metrics read at scrape time: every attached source into its families.

Each family is built afresh when Prometheus asks, from the sources NodeMetrics attached
(edge_node/metrics/sources.py); none is updated on the request path.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_node.metrics.sources import Sources, SyncStatusSource
from edge_node.tenants.model import TenantStatus

TENANT_STATUSES: tuple[str, ...] = typing.get_args(TenantStatus)
SHARD_ROW_KINDS = (
    ("uploaded", "uploaded_rows"),
    ("downloaded", "downloaded_rows"),
    ("applied", "applied_rows"),
    ("registry_uploaded", "registry_uploaded"),
    ("registry_applied", "registry_applied"),
    ("set_aside", "set_aside_rows"),
)
SET_ASIDE_REASONS = ("refused", "unknown_outcome", "too_old", "future", "reported")
# Confirmed batches not stamped with their own window (docs/billing.md, "Stamps").
PLACEMENTS = ("before_subscription", "carried_forward")
# How unknown outcomes past Stripe's identifier window were settled from its summaries.
SETTLED = (("landed", "resolved_landed"), ("resent", "resolved_resent"))


class _Health(Protocol):
    last_success_at: int | None
    consecutive_failures: int

    @property
    def state(self) -> str: ...


def _sync_targets(source: SyncStatusSource | None) -> Iterator[tuple[str, str, _Health]]:
    """(target, name, health): `postgresql` per shard, and per job the first word of its
    name (`stripe` for stripe-provisioning and stripe-usage-flush)."""
    if source is None:
        return
    for shard in source.status():
        yield "postgresql", f"shard-{shard.shard}", shard
    for job in source.job_status():
        yield job.name.split("-", 1)[0], job.name, job


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class SourceCollector(Collector):
    """Reads the attached sources into metric families; every family is always yielded (empty
    when its source is not attached), so the exposition names every metric of the node."""

    def __init__(self, sources: Sources, clock: Callable[[], float]) -> None:
        self.sources = sources
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._meter()
        yield from self._sync()
        yield from self._billing()
        yield from self._webhooks()
        yield self._quota_thresholds()
        yield from self._tenants()

    def _queue(self) -> Iterator[Metric]:
        status = self.sources.queue_status
        depth = _gauge(
            "edge_node_queue_depth_records", "Usage records not yet consumed.", ["consumer"]
        )
        age = _gauge(
            "edge_node_queue_oldest_unconsumed_age_seconds",
            "Age of the oldest usage record a consumer has not consumed (0: none waits).",
            ["consumer"],
        )
        size = _gauge("edge_node_queue_size_bytes", "Bytes of queue segments on disk.")
        capacity = _gauge("edge_node_queue_capacity_bytes", "The queue's bound (queue.max_bytes).")
        segments = _gauge("edge_node_queue_segments", "Segment files on disk.")
        if status is not None:
            now_ms = self._clock() * 1000
            for name, consumer in status.consumers.items():
                depth.add_metric([name], consumer.depth)
                oldest = consumer.oldest_unconsumed_timestamp_ms
                age.add_metric([name], 0.0 if oldest is None else max(0.0, now_ms - oldest) / 1000)
            size.add_metric([], status.bytes)
            if status.max_bytes is not None:
                capacity.add_metric([], status.max_bytes)
            segments.add_metric([], status.segment_count)
        yield from (depth, age, size, capacity, segments)
        yield from self._queue_counters()

    def _queue_counters(self) -> Iterator[Metric]:
        stats = self.sources.queue_stats
        counters = (
            ("appended_records", "Records appended since start.", "appended_records"),
            ("group_commits", "Group commits (one fsync each) since start.", "group_commits"),
            (
                "truncated_records",
                "Torn records cut off the queue's tail by recovery at start.",
                "truncated_tail_records",
            ),
            ("corrupt_records", "Damaged records found in the queue.", "corrupt_records"),
        )
        for name, doc, attribute in counters:
            family = _counter(f"edge_node_queue_{name}", doc)
            if stats is not None:
                family.add_metric([], getattr(stats, attribute))
            yield family
        failed = _gauge(
            "edge_node_queue_write_failed",
            "1 while a queue write or fsync fails (the writer retries it by itself).",
        )
        if self.sources.queue_failed is not None:
            failed.add_metric([], float(self.sources.queue_failed()))
        yield failed
        free = _gauge(
            "edge_node_storage_free_bytes",
            "Free bytes of the filesystem holding the usage queue (the data directory's).",
        )
        floor = _gauge(
            "edge_node_storage_min_free_bytes",
            "The free-space floor (storage.min_free_bytes): below it billable requests get 503.",
        )
        if self.sources.disk_room is not None:
            free_bytes, floor_bytes = self.sources.disk_room()
            if free_bytes is not None:
                free.add_metric([], free_bytes)
            floor.add_metric([], floor_bytes)
        yield free
        yield floor

    def _meter(self) -> Iterator[Metric]:
        meter = self.sources.meter
        events = _counter(
            "edge_node_usage_events",
            "Billable requests by what the meter did: recorded on the queue, rejected because "
            "the queue was full, rejected because storage could not take the event (a failing "
            "queue write, the free-space floor), served unmetered (meter.on_full), or failed "
            "to record.",
            ["outcome"],
        )
        units = _counter("edge_node_usage_units_recorded", "Usage units recorded on the queue.")
        if meter is not None:
            for outcome, value in (
                ("recorded", meter.recorded),
                ("rejected_queue_full", meter.rejected_full),
                ("rejected_storage", meter.rejected_storage),
                ("unmetered", meter.unmetered),
                ("failed", meter.failed),
            ):
                events.add_metric([outcome], value)
            units.add_metric([], meter.recorded_units)
        yield events
        yield units

    def _sync(self) -> Iterator[Metric]:
        source = self.sources.sync
        yield from self._sync_targets(source)
        yield from self._sync_shards(source)

    def _sync_targets(self, source: SyncStatusSource | None) -> Iterator[Metric]:
        """Per PostgreSQL shard and per Stripe job: up, last success, lag, failures."""
        labels = ["target", "name"]
        up = _gauge("edge_node_sync_up", "1 when the last sync attempt succeeded.", labels)
        last = _gauge(
            "edge_node_sync_last_success_timestamp_seconds",
            "When sync last succeeded (Unix time).",
            labels,
        )
        lag = _gauge(
            "edge_node_sync_lag_seconds",
            "Seconds since sync last succeeded (since the worker started, if never).",
            labels,
        )
        failures = _gauge(
            "edge_node_sync_consecutive_failures",
            "Sync attempts failed in a row (0 after a success).",
            labels,
        )
        now, since = self._clock(), self.sources.sync_watched_at
        for target, name, health in _sync_targets(source):
            key = [target, name]
            up.add_metric(key, float(health.state == "ok"))
            success_us = health.last_success_at
            if success_us is not None:
                last.add_metric(key, success_us / 1e6)
            reference = since if success_us is None else success_us / 1e6
            lag.add_metric(key, max(0.0, now - reference))
            failures.add_metric(key, health.consecutive_failures)
        yield from (up, last, lag, failures)

    def _sync_shards(self, source: SyncStatusSource | None) -> Iterator[Metric]:
        """Per PostgreSQL shard: the local outbox waiting for it, and rows synced."""
        pending = _gauge(
            "edge_node_sync_outbox_pending_tenants",
            "Tenants of a shard with local changes not yet uploaded.",
            ["shard"],
        )
        oldest = _gauge(
            "edge_node_sync_outbox_oldest_age_seconds",
            "Age of the oldest local change not yet uploaded to a shard (0: none).",
            ["shard"],
        )
        rows = _counter(
            "edge_node_sync_rows",
            "Rows synced with a shard since start, by kind.",
            ["shard", "kind"],
        )
        standby = _gauge(
            "edge_node_sync_standby_lag_seconds",
            "How far the hot standby a shard's downloads are read from was behind its primary"
            " at the last round (0: it had replayed everything received).",
            ["shard"],
        )
        now = self._clock()
        for shard in source.status() if source is not None else ():
            index = str(shard.shard)
            pending.add_metric([index], shard.pending_tenants)
            at = shard.oldest_pending_at
            oldest.add_metric([index], 0.0 if at is None else max(0.0, now - at / 1e6))
            for kind, attribute in SHARD_ROW_KINDS:
                rows.add_metric([index, kind], getattr(shard, attribute))
            if shard.standby_lag_seconds is not None:
                standby.add_metric([index], shard.standby_lag_seconds)
        yield from (pending, oldest, rows, standby)

    def _billing(self) -> Iterator[Metric]:
        sources = list(self.sources.billing)
        if self.sources.billing_published is not None:
            sources += self.sources.billing_published()
        confirmed = _counter(
            "edge_node_billing_batches_confirmed",
            "Meter-event batches (one per tenant and window) Stripe holds: usage billed.",
        )
        set_aside = _counter(
            "edge_node_billing_batches_set_aside",
            "Meter-event batches set aside, never to be sent (docs/billing.md), by reason.",
            ["reason"],
        )
        calls = _counter("edge_node_billing_stripe_calls", "Meter-event calls made to Stripe.")
        failed = _counter(
            "edge_node_billing_stripe_failures",
            "Meter-event calls that failed in a way worth retrying (network, 5xx, 429).",
        )
        placed = _counter(
            "edge_node_billing_batches_placed",
            "Confirmed batches stamped outside their own window's period: at the subscription's"
            " start, or carried forward into the open period (docs/billing.md), by placement.",
            ["placement"],
        )
        settled = _counter(
            "edge_node_billing_unknown_outcomes_settled",
            "Batches of unknown outcome settled from Stripe's meter event summaries: landed"
            " (confirmed) or resent under a fresh identifier.",
            ["result"],
        )
        reports = _counter(
            "edge_node_billing_meter_error_reports",
            "Stripe meter error reports (thin events) fetched and applied.",
        )
        if sources:
            for placement in PLACEMENTS:
                placed.add_metric([placement], sum(getattr(s, placement) for s in sources))
            for result, attribute in SETTLED:
                settled.add_metric([result], sum(getattr(s, attribute) for s in sources))
            reports.add_metric([], sum(s.meter_error_reports for s in sources))
            confirmed.add_metric([], sum(s.confirmed + s.duplicates for s in sources))
            for reason in SET_ASIDE_REASONS:
                value = sum(getattr(s, f"set_aside_{reason}") for s in sources)
                set_aside.add_metric([reason], value)
            calls.add_metric([], sum(s.calls for s in sources))
            failed.add_metric([], sum(s.transient_failures for s in sources))
        yield from (confirmed, set_aside, calls, failed, placed, settled, reports)

    def _webhooks(self) -> Iterator[Metric]:
        stats = self.sources.webhooks
        events = _counter(
            "edge_node_webhook_events",
            "Stripe webhook deliveries by outcome (applied, stale, ignored, ..., duplicate, "
            "invalid_signature, stale_signature, tenant_not_synced).",
            ["outcome"],
        )
        previous = _counter(
            "edge_node_webhook_previous_secret_verifications",
            "Deliveries verified with the previous signing secret (a rotation under way).",
        )
        if stats is not None:
            for outcome, value in stats.outcomes.items():
                events.add_metric([outcome], value)
            events.add_metric(["duplicate"], stats.duplicates)
            events.add_metric(["invalid_signature"], stats.forged)
            events.add_metric(["stale_signature"], stats.stale_signatures)
            events.add_metric(["tenant_not_synced"], stats.unknown_tenant_retries)
            previous.add_metric([], stats.verified_with_previous)
        yield events
        yield previous

    def _quota_thresholds(self) -> Metric:
        crossed = _counter(
            "edge_node_quota_thresholds_crossed",
            "Tenants whose spend reached 80% or 100% of their allowance for the billing period,"
            " counted once per tenant, period and threshold (docs/quotas.md).",
            ["threshold"],
        )
        for threshold, count in (self.sources.quota_thresholds or {80: 0, 100: 0}).items():
            crossed.add_metric([str(threshold)], count)
        return crossed

    def _tenants(self) -> Iterator[Metric]:
        tenants = _gauge("edge_node_tenants", "Tenants in node.sqlite by status.", ["status"])
        counts = self.sources.tenants
        if counts is not None:
            for status in TENANT_STATUSES:
                tenants.add_metric([status], counts.get(status, 0))
        yield tenants
        unprovisioned = _gauge(
            "edge_node_stripe_unprovisioned_tenants",
            "Tenants (canceled ones aside) without a Stripe customer or subscription:"
            " `pending` (not tried or not yet done) or `failing` (the last attempt failed).",
            ["state"],
        )
        if self.sources.unprovisioned is not None:
            for state in ("pending", "failing"):
                unprovisioned.add_metric([state], self.sources.unprovisioned.get(state, 0))
        yield unprovisioned
