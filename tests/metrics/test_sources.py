"""NodeMetrics read back from a fresh registry: sync status, billing counters, queue recovery."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge_node.metrics.node import NodeMetrics
from edge_node.queue import open_queue
from edge_node.queue.framing import HEADER_SIZE
from sync.billing.send import BillingStats
from sync.job_status_file import usage_flush_totals, write_jobs_file
from sync.jobs import JobStatus
from sync.status import ShardStatus
from sync.status_files import SyncStatusFiles
from tests.queue.conftest import FRAME_BYTES, flip_byte, payload, segment_files

NOW = 1_800_000_000.0


@dataclass
class WorkerStatus:
    """What the sync worker hands out: snapshots of its shard and job statuses."""

    shards: list[ShardStatus] = field(default_factory=list)
    jobs: list[JobStatus] = field(default_factory=list)

    def status(self) -> list[ShardStatus]:
        return self.shards

    def job_status(self) -> list[JobStatus]:
        return self.jobs


def fresh_metrics(clock: float = NOW) -> NodeMetrics:
    return NodeMetrics(CollectorRegistry(), clock=lambda: clock)


def value(metrics: NodeMetrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


class TestSync:
    def test_lag_failures_and_outbox_per_shard_and_per_stripe_job(self) -> None:
        """A shard that last succeeded 30 s ago and now fails shows lag 30, up 0, its failures,
        its outbox's age and its row totals; a Stripe job that never succeeded shows the lag
        since the worker was watched."""
        shard = ShardStatus(0, "postgresql://edge@db/central", state="retrying")
        shard.last_success_at = int((NOW - 30) * 1e6)
        shard.consecutive_failures = 3
        shard.pending_tenants = 2
        shard.oldest_pending_at = int((NOW - 45) * 1e6)
        shard.uploaded_rows = 7
        flush = JobStatus("stripe-usage-flush", state="starting")
        worker = WorkerStatus([shard], [flush])
        metrics = fresh_metrics()
        metrics.watch_sync(worker)
        metrics.sources.sync_watched_at = NOW - 12
        pg = {"target": "postgresql", "name": "shard-0"}
        assert value(metrics, "edge_node_sync_lag_seconds", **pg) == 30
        assert value(metrics, "edge_node_sync_up", **pg) == 0
        assert value(metrics, "edge_node_sync_consecutive_failures", **pg) == 3
        assert value(metrics, "edge_node_sync_last_success_timestamp_seconds", **pg) == NOW - 30
        assert value(metrics, "edge_node_sync_outbox_pending_tenants", shard="0") == 2
        assert value(metrics, "edge_node_sync_outbox_oldest_age_seconds", shard="0") == 45
        assert value(metrics, "edge_node_sync_rows_total", shard="0", kind="uploaded") == 7
        stripe = {"target": "stripe", "name": "stripe-usage-flush"}
        assert value(metrics, "edge_node_sync_lag_seconds", **stripe) == 12
        assert value(metrics, "edge_node_sync_last_success_timestamp_seconds", **stripe) is None

    def test_a_standby_lag_is_exported_only_for_shards_read_from_a_standby(self) -> None:
        """A shard whose downloads come from a hot standby exports that standby's lag; a shard
        read from its primary exports none."""
        read_from_standby = ShardStatus(0, "postgresql://edge@db/central")
        read_from_standby.standby_lag_seconds = 2.5
        worker = WorkerStatus([read_from_standby, ShardStatus(1, "postgresql://edge@db2/c")])
        metrics = fresh_metrics()
        metrics.watch_sync(worker)
        assert value(metrics, "edge_node_sync_standby_lag_seconds", shard="0") == 2.5
        assert value(metrics, "edge_node_sync_standby_lag_seconds", shard="1") is None

    def test_a_recovered_shard_reads_up_with_no_failures(self) -> None:
        """The status objects are read at each scrape: a shard back to ok shows up 1, 0
        failures and lag 0 right after its success."""
        shard = ShardStatus(0, "postgresql://edge@db/central", state="retrying")
        shard.consecutive_failures = 4
        worker = WorkerStatus([shard])
        metrics = fresh_metrics()
        metrics.watch_sync(worker)
        pg = {"target": "postgresql", "name": "shard-0"}
        assert value(metrics, "edge_node_sync_consecutive_failures", **pg) == 4
        shard.state, shard.consecutive_failures = "ok", 0
        shard.last_success_at = int(NOW * 1e6)
        assert value(metrics, "edge_node_sync_up", **pg) == 1
        assert value(metrics, "edge_node_sync_consecutive_failures", **pg) == 0
        assert value(metrics, "edge_node_sync_lag_seconds", **pg) == 0


class TestBilling:
    def test_batches_billed_and_set_aside_are_summed_over_every_flush(self) -> None:
        """Two usage flushes' counters add up: confirmed (duplicates included: Stripe holds
        them), set aside by reason, calls and retryable failures."""
        first, second = BillingStats(), BillingStats()
        first.confirmed, first.duplicates, second.confirmed = 5, 1, 2
        first.set_aside_too_old, second.set_aside_refused = 1, 2
        first.calls, second.calls, second.transient_failures = 6, 4, 2
        metrics = fresh_metrics()
        metrics.watch_billing(first)
        metrics.watch_billing(second)
        assert value(metrics, "edge_node_billing_batches_confirmed_total") == 8
        set_aside = "edge_node_billing_batches_set_aside_total"
        assert value(metrics, set_aside, reason="too_old") == 1
        assert value(metrics, set_aside, reason="refused") == 2
        assert value(metrics, set_aside, reason="unknown_outcome") == 0
        assert value(metrics, "edge_node_billing_stripe_calls_total") == 10
        assert value(metrics, "edge_node_billing_stripe_failures_total") == 2

    def test_placements_settled_outcomes_and_meter_errors_are_exported(self) -> None:
        """Batches carried forward or stamped at the subscription's start, unknown outcomes
        settled from Stripe's summaries, and usage Stripe reported dropped are counted."""
        flush, errors = BillingStats(), BillingStats()
        flush.carried_forward, flush.before_subscription = 3, 1
        flush.resolved_landed, flush.resolved_resent = 2, 1
        errors.meter_error_reports, errors.set_aside_reported = 1, 4
        metrics = fresh_metrics()
        metrics.watch_billing(flush)
        metrics.watch_billing(errors)
        placed = "edge_node_billing_batches_placed_total"
        assert value(metrics, placed, placement="carried_forward") == 3
        assert value(metrics, placed, placement="before_subscription") == 1
        settled = "edge_node_billing_unknown_outcomes_settled_total"
        assert value(metrics, settled, result="landed") == 2
        assert value(metrics, settled, result="resent") == 1
        assert value(metrics, "edge_node_billing_meter_error_reports_total") == 1
        set_aside = "edge_node_billing_batches_set_aside_total"
        assert value(metrics, set_aside, reason="reported") == 4

    def test_flushes_another_process_published_are_exported(self, tmp_path: Path) -> None:
        """A worker of `serve --workers N` exports the supervisor's usage flushes, summed,
        from the jobs file it publishes: read again at every scrape."""
        first, second = BillingStats(), BillingStats()
        first.confirmed, second.confirmed, second.set_aside_unknown_outcome = 3, 4, 1
        write_jobs_file(tmp_path, "edge-1", [], usage_flush_totals([first, second]))
        metrics = fresh_metrics()
        metrics.watch_published_billing(SyncStatusFiles(tmp_path).usage_flush)
        assert value(metrics, "edge_node_billing_batches_confirmed_total") == 7
        set_aside = "edge_node_billing_batches_set_aside_total"
        assert value(metrics, set_aside, reason="unknown_outcome") == 1
        second.confirmed = 10
        write_jobs_file(tmp_path, "edge-1", [], usage_flush_totals([first, second]))
        assert value(metrics, "edge_node_billing_batches_confirmed_total") == 13


class TestQueueRecovery:
    async def test_torn_and_corrupt_records_found_at_open_are_counted(self, tmp_path: Path) -> None:
        """A queue reopened with a damaged middle record and a torn last record shows one
        corrupt and one truncated record."""
        directory = tmp_path / "queue"
        async with await open_queue(directory, consumers=("billing",)) as queue:
            for n in range(6):
                await queue.append(payload(n))
        segment = segment_files(directory)[0]
        flip_byte(segment, 1 * FRAME_BYTES + HEADER_SIZE + 2)
        with segment.open("r+b") as file:
            file.truncate(6 * FRAME_BYTES - 3)
        async with await open_queue(directory, consumers=("billing",)) as queue:
            metrics = fresh_metrics()
            metrics.watch_queue(queue)
            await metrics.refresh()
            assert value(metrics, "edge_node_queue_truncated_records_total") == 1
            assert value(metrics, "edge_node_queue_corrupt_records_total") == 1
            assert value(metrics, "edge_node_queue_depth_records", consumer="billing") == 5


def test_the_queue_package_imports_neither_prometheus_nor_the_rest_of_the_node() -> None:
    """edge_node.queue loads no prometheus_client and no other edge_node module."""
    probe = (
        "import sys, edge_node.queue;"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'edge_node'))"
        " and not m.startswith('edge_node.queue') and m != 'edge_node'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
