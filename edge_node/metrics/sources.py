"""What the metrics read at scrape time from the rest of the node: its parts, named by Protocols.

Nothing here is updated on the request path. Each part of the node keeps its own plain
counters or status objects (the queue's `QueueStats`, the meter's `MeterStats`, the sync
worker's shard and job statuses, the usage flush's `BillingStats`, the webhooks'
`WebhookStats`) and NodeMetrics turns them into metric families only when Prometheus asks
(edge_node/metrics/collector.py). The sync and billing parts are named here by Protocols, so
the request path never imports `sync`; any object with these attributes plugs in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_node.queue import QueueStats, QueueStatus


class ShardHealth(Protocol):
    """One PostgreSQL shard's sync health (sync.status.ShardStatus). Times in us."""

    shard: int
    last_success_at: int | None
    consecutive_failures: int
    pending_tenants: int
    oldest_pending_at: int | None
    uploaded_rows: int
    downloaded_rows: int
    applied_rows: int
    registry_uploaded: int
    registry_applied: int
    set_aside_rows: int
    standby_lag_seconds: float | None

    @property
    def state(self) -> str: ...


class JobHealth(Protocol):
    """One periodic sync job's health (sync.jobs.JobStatus), e.g. `stripe-usage-flush`."""

    name: str
    last_success_at: int | None
    consecutive_failures: int

    @property
    def state(self) -> str: ...


class SyncStatusSource(Protocol):
    """The sync worker (sync.worker.SyncWorker): snapshots of its shards and jobs."""

    def status(self) -> Sequence[ShardHealth]: ...
    def job_status(self) -> Sequence[JobHealth]: ...


class BillingCounters(Protocol):
    """The usage flush's counters since start (sync.billing.stats.BillingStats)."""

    calls: int
    confirmed: int
    duplicates: int
    transient_failures: int
    set_aside_refused: int
    set_aside_unknown_outcome: int
    set_aside_too_old: int
    set_aside_future: int
    set_aside_reported: int
    carried_forward: int
    before_subscription: int
    resolved_landed: int
    resolved_resent: int
    meter_error_reports: int


class WebhookCounts(Protocol):
    """The webhook endpoint's counters (edge_node.tenants.webhooks.WebhookStats)."""

    outcomes: dict[str, int]
    duplicates: int
    forged: int
    stale_signatures: int
    verified_with_previous: int
    unknown_tenant_retries: int


class MeterCounts(Protocol):
    """The meter's counters (edge_node.usage.meter.MeterStats)."""

    recorded: int
    recorded_units: int
    rejected_full: int
    rejected_storage: int
    unmetered: int
    failed: int


@dataclass
class Sources:
    """Everything attached so far, and the snapshots the last refresh took."""

    queue_stats: QueueStats | None = None
    queue_status: QueueStatus | None = None
    queue_failed: Callable[[], bool] | None = None
    # Free bytes of the data directory's filesystem (None: unreadable) and its floor.
    disk_room: Callable[[], tuple[int | None, int]] | None = None
    meter: MeterCounts | None = None
    sync: SyncStatusSource | None = None
    sync_watched_at: float = 0.0
    billing: list[BillingCounters] = field(default_factory=list)
    # Another process's usage flushes (the supervisor of `serve --workers N`), read at scrape.
    billing_published: Callable[[], Sequence[BillingCounters]] | None = None
    webhooks: WebhookCounts | None = None
    tenants: Mapping[str, int] | None = None
    unprovisioned: Mapping[str, int] | None = None  # pending, failing
    quota_thresholds: Mapping[int, int] | None = None  # percent: times recorded
