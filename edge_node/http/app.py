"""The application factory: wires configuration, storage and the router into an aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge_node.admission.ratelimit import RateLimiter
from edge_node.admission.router import METER_KEY, NOT_READY_RETRY_AFTER, ROUTER_KEY, TenantRouter
from edge_node.admission.tokens import TokenVerifier, load_keys
from edge_node.config import Config
from edge_node.crypto.keystore import open_keyring
from edge_node.descriptors import open_files_limit, tenant_files_budget
from edge_node.errors import ServiceUnavailable
from edge_node.http.collector import collector_for_serving
from edge_node.http.docs_page import add_docs_routes
from edge_node.http.front import front
from edge_node.http.guards import request_guards
from edge_node.http.openapi import openapi_document
from edge_node.metrics.leases import LeaseCollector
from edge_node.metrics.node import NodeMetrics, add_metrics_route
from edge_node.node_database import NodeFileWatch, check_writable, open_node_database
from edge_node.rating.handlers import STORES_KEY, add_routes
from edge_node.rating.store import TenantStores
from edge_node.secrets import SecretFiles
from edge_node.tenant_usage.handlers import add_usage_routes
from edge_node.tenant_usage.model import UsageSource
from edge_node.tenants.credits import CreditStore
from edge_node.tenants.registry import TenantRegistry
from edge_node.tenants.stripe_events import BillingEventStore
from edge_node.tenants.webhooks import (
    WEBHOOKS_KEY,
    StripeWebhooks,
    add_webhook_routes,
    open_webhook_secrets,
)
from edge_node.usage.leases import LeaseBook
from edge_node.usage.meter import Meter
from edge_node.usage.thresholds import ThresholdLog
from edge_node.web.answers import json_response
from edge_node.web.limits import SERVER_HANDLER_KEY

CONFIG_KEY = web.AppKey("config", Config)
NODE_DATABASE_KEY = web.AppKey("node_database", sqlite3.Connection)
SECRETS_KEY = web.AppKey("secrets", SecretFiles)
NODE_FILE_KEY: web.AppKey[NodeFileWatch | None] = web.AppKey("node_file")
NODE_FILE_CHECK_SECONDS = 1.0
CREDITS_LOCK_WAIT_MS = 250
NOT_READY = {"Retry-After": NOT_READY_RETRY_AFTER}
# What clients are told once node.sqlite is displaced (the log names the file).
DISPLACED = (
    "this node's database was deleted or replaced under the running node; it serves again "
    "once restarted on the right file"
)

log = logging.getLogger(__name__)


def tenant_cache_size(configured: int) -> int:
    """Tenant files kept open: `storage.max_open_tenants`, or fewer where the open-files limit
    would not hold that many (edge_node.descriptors)."""
    budget = tenant_files_budget(open_files_limit())
    if budget < configured:
        log.warning(
            "keeping at most %d tenant files open, not %d (storage.max_open_tenants): the "
            "open-files limit is %d; raise LimitNOFILE= or `ulimit -n` for more",
            budget,
            configured,
            open_files_limit(),
        )
    return min(configured, budget)


@dataclass(frozen=True)
class NodeStorage:
    """The node's open databases: node.sqlite (with the registry on it) and the per-tenant
    rating files."""

    node_database: sqlite3.Connection
    registry: TenantRegistry
    stores: TenantStores
    node_file: NodeFileWatch | None = None  # node.sqlite deleted or replaced underneath
    credits: CreditStore | None = None  # API keys' credits left (credits.sqlite)
    # Leases of fleet-wide allowances (leases.sqlite), with a central database only.
    leases: LeaseBook | None = None

    @classmethod
    def open(cls, config: Config) -> NodeStorage:
        node_database = open_node_database(
            config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms
        )
        try:
            registry = TenantRegistry(node_database)
        except BaseException:
            node_database.close()
            raise
        stores = TenantStores(
            config.data_path / "tenants",
            node_id=config.node_id,
            synchronous=config.storage.synchronous,
            max_open=tenant_cache_size(config.storage.max_open_tenants),
            busy_timeout_ms=config.storage.busy_timeout_ms,
            keyring=open_keyring(config),
        )
        try:
            stores.keyring.master_key_id()  # a missing or wrong master key fails the start
            # Spends wait for another worker's lock without stopping the loop
            # (edge_node.write_batches); past this short wait the request gets a 503.
            credits = CreditStore.open(config.data_path, busy_timeout_ms=CREDITS_LOCK_WAIT_MS)
        except BaseException:
            stores.close()
            node_database.close()
            raise
        try:
            leases = LeaseBook(config.data_path) if config.central.dsns else None
        except BaseException:
            credits.close()
            stores.close()
            node_database.close()
            raise
        node_file = NodeFileWatch(config.data_path / "node.sqlite")
        return cls(node_database, registry, stores, node_file, credits, leases)

    def close(self) -> None:
        self.stores.close()
        if self.credits is not None:
            self.credits.close()
        if self.leases is not None:
            self.leases.close()
        self.node_database.close()


def create_app(
    config: Config,
    storage: NodeStorage,
    meter: Meter,
    *,
    secrets: SecretFiles | None = None,
    metrics: NodeMetrics | None = None,
    limiter: RateLimiter | None = None,
    usage: UsageSource | None = None,
) -> web.Application:
    """The v1 API served from `storage`, metered by `meter`; the caller owns and closes both.
    Serve it with edge_node.web.limits.LimitedAppRunner, which puts the app's front
    (edge_node.http.front: request ids, guards, problem answers, metrics) around it.

    Secret files are opened in `secrets` (a fresh set when None), which the caller reloads on
    SIGHUP; an unreadable one is a ConfigError. `metrics` (a fresh registry when None) gets
    the app's request metrics and its sources attached. `limiter` (the process's own buckets
    when None) applies the tenants' rate limits. `usage` answers the tenants' usage API
    (billing's records, which the composition root reads: sync/billing/usage_view.py); the
    route is served only with it.
    """
    if metrics is None:
        metrics = node_metrics(config)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    guards = request_guards(app, config, storage.node_database, metrics_registry=metrics.registry)
    serving_metrics = metrics if config.metrics.enabled else None
    app[SERVER_HANDLER_KEY] = front(serving_metrics, guards, app.router)
    app[CONFIG_KEY] = config
    app[NODE_DATABASE_KEY] = storage.node_database
    app[NODE_FILE_KEY] = storage.node_file
    app[STORES_KEY] = storage.stores
    app[METER_KEY] = meter
    verifier = TokenVerifier(load_keys(config.auth.jwt), config.auth.jwt)
    app[ROUTER_KEY] = TenantRouter(
        storage.registry,
        verifier,
        limiter or RateLimiter(config.rate_limit.per_minute),
        past_due_grace_seconds=config.webhooks.past_due_grace_hours * 3600,
        quotas=config.quotas,
        legacy_headers=config.rate_limit.legacy_headers,
        credits=storage.credits,
        thresholds=ThresholdLog(storage.node_database),
        leases=storage.leases,
    )
    if secrets is None:
        secrets = SecretFiles(check_interval=secret_check_interval(config))
    app[SECRETS_KEY] = secrets
    webhook_secrets = open_webhook_secrets(config.webhooks, secrets)
    store = BillingEventStore(storage.node_database)
    add_webhook_routes(app, StripeWebhooks(config.webhooks, webhook_secrets, store))
    _watch(metrics, app, storage, meter)
    add_metrics_route(app, metrics)
    app.cleanup_ctx.append(_background_checkpoints)
    app.cleanup_ctx.append(collector_for_serving)
    add_routes(app)
    if usage is not None:
        add_usage_routes(app, usage)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    add_docs_routes(app)
    return app


def node_metrics(config: Config) -> NodeMetrics:
    """The process's metrics as `[metrics]` configures them, in a registry of their own."""
    return NodeMetrics(
        CollectorRegistry(),
        tenant_label=config.metrics.tenant_label,
        serving=config.metrics.enabled,
    )


def _watch(metrics: NodeMetrics, app: web.Application, storage: NodeStorage, meter: Meter) -> None:
    metrics.watch_meter(meter.stats)
    if meter.floor is not None:
        metrics.watch_disk_floor(meter.floor)
    if meter.queue is not None:
        metrics.watch_queue(meter.queue)
    metrics.watch_webhooks(app[WEBHOOKS_KEY].stats)
    metrics.watch_tenants(storage.registry)
    thresholds = app[ROUTER_KEY].thresholds
    if thresholds is not None:
        metrics.watch_quota_thresholds(thresholds.crossed)
    if storage.leases is not None:
        metrics.registry.register(LeaseCollector(storage.leases))


def secret_check_interval(config: Config) -> float | None:
    """How often a secret file is checked for changes on use; None: only on SIGHUP."""
    return config.secrets.check_interval_seconds or None


async def _background_checkpoints(app: web.Application) -> AsyncIterator[None]:
    interval = app[CONFIG_KEY].storage.checkpoint_interval_seconds
    tasks = [asyncio.create_task(app[STORES_KEY].run_checkpoints(interval))]
    node_file = app[NODE_FILE_KEY]
    if node_file is not None:
        tasks.append(
            asyncio.create_task(_watch_node_file(node_file, app[ROUTER_KEY], app[WEBHOOKS_KEY]))
        )
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch_node_file(
    node_file: NodeFileWatch, router: TenantRouter, webhooks: StripeWebhooks
) -> None:
    """Look at node.sqlite's identity every second: once it is deleted or replaced, the node
    logs it (with the path) and refuses every tenant request and every Stripe event (503
    `not-ready`), since keys revoked, tenants suspended and events applied from then on would
    go to a file this process does not read."""
    while True:
        await asyncio.sleep(NODE_FILE_CHECK_SECONDS)
        if node_file.problem() is not None:
            router.displaced = webhooks.displaced = DISPLACED
            return


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive: the event loop answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready: node.sqlite is still the file the node opened and takes a write, the tenant
    directory is writable, the queue writes and the data directory's filesystem is above its
    free-space floor. Tenants whose file is damaged are listed (they alone get 503)."""
    node_file = request.app[NODE_FILE_KEY]
    problem = node_file.problem() if node_file is not None else None
    if problem is not None:
        raise ServiceUnavailable(problem, slug="not-ready", headers=NOT_READY)
    try:
        check_writable(request.app[NODE_DATABASE_KEY])
    except sqlite3.Error as exc:
        raise ServiceUnavailable(
            f"node.sqlite is not writable: {exc}", slug="not-ready", headers=NOT_READY
        ) from None
    tenants_dir = request.app[STORES_KEY].directory
    if not os.access(tenants_dir, os.W_OK | os.X_OK):
        raise ServiceUnavailable(
            f"{tenants_dir} is not writable", slug="not-ready", headers=NOT_READY
        )
    problem = request.app[METER_KEY].storage_problem()
    if problem is not None:
        raise ServiceUnavailable(problem, slug="not-ready", headers=NOT_READY)
    damaged = request.app[STORES_KEY].damaged
    if damaged:
        return json_response({"status": "ready", "damaged_tenants": sorted(damaged)})
    return json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(openapi_document())
