"""The sync worker inside the daemon: started beside the HTTP server when the node has a
central database or Stripe to talk to, and its health exported as metrics.

The sync package (its PostgreSQL driver, the Stripe SDK) is imported only here and only when
it is needed: a standalone node and the request path never load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge_node.config import Config
from edge_node.http.app import NodeStorage, secret_check_interval
from edge_node.metrics.node import NodeMetrics
from edge_node.metrics.sources import SyncStatusSource
from edge_node.queue import QueueFollower, WriteAheadQueue
from edge_node.secrets import SecretFiles
from edge_node.usage.operations import OPERATIONS

SYNC_STOP_GRACE_SECONDS = 5.0


class BackgroundWorker(Protocol):
    """What serve() needs of the sync worker, named without importing the sync package."""

    async def stop(self, grace: float = ...) -> None: ...


def start_sync(
    config: Config,
    storage: NodeStorage,
    secrets: SecretFiles | None = None,
    *,
    queue: WriteAheadQueue | None = None,
    followers: Sequence[QueueFollower] = (),
    metrics: NodeMetrics | None = None,
) -> BackgroundWorker | None:
    """Start the sync worker when central.dsns or stripe.api_key_file is set; None for a
    standalone node. With Stripe it also runs the Stripe jobs (provisioning, and with the
    meter's `queue` the usage flush; one more flush per queue of another process that this
    process `followers`). `metrics` gets the worker's and the flushes' status."""
    if not config.central.dsns and not config.stripe.enabled:
        return None
    # Imported here: a standalone node, and the request path, never load the sync package,
    # its PostgreSQL driver or the Stripe SDK.
    from sync.replication.round_values import EdgeStorage  # noqa: PLC0415
    from sync.worker import SyncWorker  # noqa: PLC0415

    jobs = []
    if config.stripe.enabled:
        from sync.billing.jobs import stripe_jobs  # noqa: PLC0415

        secrets = secrets or SecretFiles(check_interval=secret_check_interval(config))
        api_key = secrets.open(config.stripe.api_key_file, name="stripe.api_key_file")
        jobs = stripe_jobs(
            config, storage.node_database, api_key.value, queue=queue, followers=followers
        )
    if config.central.dsns:
        from sync.leases.job import LeaseJob  # noqa: PLC0415

        units = config.meter.units
        jobs.append(
            LeaseJob(
                config.central,
                config.quotas,
                storage.registry,
                config.data_path,
                config.node_id,
                max_units=max(1, *(units.units(op.name) for op in OPERATIONS)),
            )
        )
    worker = SyncWorker(
        config.central,
        EdgeStorage(storage.node_database, storage.stores),
        node_id=config.node_id,
        data_dir=config.data_path,
        jobs=jobs,
    )
    worker.start()
    if metrics is not None:
        watch_sync(metrics, worker, jobs)
    return worker


def watch_supervisor_sync(config: Config, metrics: NodeMetrics) -> None:
    """In a worker of `serve --workers N`: export the sync health the supervisor's sync
    worker publishes in the data directory, since the supervisor serves no /metrics."""
    if not config.central.dsns and not config.stripe.enabled:
        return
    from sync.status_files import SyncStatusFiles  # noqa: PLC0415 (reads files, no driver)

    files = SyncStatusFiles(config.data_path)
    metrics.watch_sync(files)
    metrics.watch_published_billing(files.usage_flush)


def watch_sync(metrics: NodeMetrics, worker: SyncStatusSource, jobs: Sequence[object]) -> None:
    """Attach the sync worker's shard and job statuses and the billing jobs' counters (each
    usage flush's, and the meter error reports')."""
    from sync.billing.stats import BillingStats  # noqa: PLC0415 (loaded once sync runs)

    metrics.watch_sync(worker)
    for job in jobs:
        stats = getattr(job, "stats", None)
        if isinstance(stats, BillingStats):
            metrics.watch_billing(stats)
