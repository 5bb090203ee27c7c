"""Wiring Stripe into the sync worker: the gateway from `[stripe]` and the jobs that use it.

The daemon calls `stripe_jobs` when `stripe.api_key_file` is set and hands the jobs to the
sync worker (edge_node/cli/daemon.py `start_sync`); the CLI uses `open_gateway` for bootstrap
and for provisioning a tenant it has just created. One gateway per process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from edge_node.config import Config, StripeConfig
from edge_node.queue import ConsumerQueue, QueueFollower, WriteAheadQueue
from edge_node.tenants.registry import TenantRegistry
from sync.billing.flush import open_billing
from sync.billing.ledger import BillingLedger
from sync.billing.meter_errors import MeterErrorJob
from sync.billing.provisioning import Provisioner, ProvisioningJob
from sync.jobs import PeriodicJob
from sync.stripe.catalog import BillingCatalog, catalog_path, load_catalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.idempotency import CreateKeys


def open_gateway(
    stripe: StripeConfig, api_key: Callable[[], str], create_keys: CreateKeys | None = None
) -> StripeGateway:
    """A gateway configured from `[stripe]`; `api_key` returns the current secret key,
    `create_keys` keeps its Idempotency-Key generations (node.sqlite's, normally)."""
    return StripeGateway(
        api_key,
        api_base=stripe.api_base or None,
        meter_events_base=stripe.meter_events_base or None,
        max_network_retries=stripe.max_network_retries,
        timeout_seconds=stripe.timeout_seconds,
        collection_method=stripe.collection_method,
        days_until_due=stripe.days_until_due,
        create_keys=create_keys,
    )


def catalog_loader(config: Config) -> Callable[[], BillingCatalog | None]:
    """Reads the catalog file on each call, so a bootstrap run while the daemon serves counts."""
    path = catalog_path(config.data_path, config.stripe.catalog_file)
    return lambda: load_catalog(path)


def stripe_jobs(
    config: Config,
    node_database: sqlite3.Connection,
    api_key: Callable[[], str],
    *,
    queue: WriteAheadQueue | None = None,
    followers: Sequence[QueueFollower] = (),
) -> list[PeriodicJob]:
    """The sync worker's Stripe jobs, sharing one gateway (each job's close() closes it):
    provisioning, Stripe's meter error reports, and the usage flush of `queue` (the meter's)
    when there is one and of each queue another process owns that `followers` read."""
    gateway = open_gateway(config.stripe, api_key, CreateKeys(node_database))
    provisioner = Provisioner(gateway, TenantRegistry(node_database), catalog_loader(config))
    interval = config.stripe.provisioning_interval_seconds
    jobs: list[PeriodicJob] = [
        ProvisioningJob(provisioner, gateway, interval),
        MeterErrorJob(gateway, node_database, BillingLedger.open(config.data_path), interval),
    ]
    usage: list[ConsumerQueue] = [] if queue is None else [queue]
    for flushed in [*usage, *followers]:
        jobs.append(open_billing(config, gateway, flushed, close_gateway=gateway.close))
    return jobs
