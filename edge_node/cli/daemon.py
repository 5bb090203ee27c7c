"""Running the node: open storage, serve HTTP until SIGTERM or SIGINT, then stop cleanly.

SIGHUP re-reads every secret file (webhook signing secrets, the Stripe API key), the TLS
certificate, the JWT keys and the reloadable settings in place (edge_node/cli/reload.py). The
service manager hears READY, WATCHDOG, STOPPING and STATUS (edge_node/cli/sd_notify.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_node import __version__
from edge_node.admission.router import ROUTER_KEY
from edge_node.admission.shared_limits import SharedRateLimiter
from edge_node.cli.health_socket import (
    VERSION_FIELD,
    WorkerSockets,
    inherited_sites,
    stop_accepting,
)
from edge_node.cli.reload import NodeReloader
from edge_node.cli.runtime_file import RuntimeFile
from edge_node.cli.sd_notify import ServiceNotifier
from edge_node.cli.sync_start import (
    SYNC_STOP_GRACE_SECONDS,
    BackgroundWorker,
    start_sync,
    watch_supervisor_sync,
)
from edge_node.cli.upgrade_record import UpgradeCollector, refuse_upgrades
from edge_node.config import Config, ServiceEnvironment
from edge_node.http.app import NodeStorage, create_app, node_metrics, secret_check_interval
from edge_node.queue import QueueFollower, QueueLocked, WriteAheadQueue
from edge_node.queue.locking import DirectoryLock
from edge_node.secrets import SecretFiles
from edge_node.tenant_usage.model import UsageSource
from edge_node.usage.meter import BILLING_CONSUMER, Meter, open_meter
from edge_node.web.accepting import ListenerSite, open_listeners
from edge_node.web.limits import LimitedAppRunner
from edge_node.web.tls import ReloadableTls, open_tls

log = logging.getLogger(__name__)

SUPERVISOR_CHECK_SECONDS = 1.0


async def serve(
    config: Config,
    *,
    announce: Callable[[str], None] | None = None,
    service: ServiceEnvironment | None = None,
    reload_config: Callable[[], Config] | None = None,
    worker: int | None = None,
    buckets_fd: int | None = None,
    sockets: WorkerSockets | None = None,
) -> None:
    """Serve until told to stop; in-flight requests get the configured grace period.

    `service` is where to send READY, WATCHDOG, STOPPING and STATUS (sd_notify.py);
    `reload_config` reads the configuration again on SIGHUP (reload.py). A `worker` index
    makes this one worker of a supervisor (supervisor.py): it shares the port, serves
    queue/worker-N and leaves the sync worker and the data directory's lock to the supervisor;
    `buckets_fd` is the supervisor's table of rate-limit buckets (shared_limits.py), and
    `sockets` its listening sockets and this worker's health socket (health_socket.py).
    """
    notifier = ServiceNotifier(service or ServiceEnvironment())
    node_lock = None if worker is not None else lock_data_dir(config)
    try:
        await _serve_storage(
            config,
            notifier,
            announce or _print,
            reload_config,
            worker,
            buckets_fd=buckets_fd,
            sockets=sockets or WorkerSockets(),
        )
    finally:
        notifier.close()
        if node_lock is not None:
            node_lock.release()


async def _serve_storage(
    config: Config,
    notifier: ServiceNotifier,
    announce: Callable[[str], None],
    reload_config: Callable[[], Config] | None,
    worker: int | None,
    *,
    buckets_fd: int | None,
    sockets: WorkerSockets,
) -> None:
    """Open the databases and the queue, serve, and close them all on the way out."""
    storage = NodeStorage.open(config)
    meter: Meter | None = None
    sync_worker: BackgroundWorker | None = None
    background: list[asyncio.Task[None]] = []
    metrics = node_metrics(config)
    runtime = RuntimeFile(config.data_path) if worker is None else None
    limiter: SharedRateLimiter | None = None
    try:
        tls = open_tls(config.tls)
        meter = await open_meter(
            config.meter,
            config.queue,
            queue_directory(config, worker or 0),
            config.node_id,
            fsync=metrics.timed_fsync(),
            min_free_bytes=config.storage.min_free_bytes,
        )
        secrets = SecretFiles(check_interval=secret_check_interval(config))
        if worker is not None:
            limiter = open_shared_limiter(config, buckets_fd)
        app = create_app(
            config,
            storage,
            meter,
            secrets=secrets,
            metrics=metrics,
            limiter=limiter,
            usage=_usage_source(config),
        )
        if worker is None:
            followers = follow_queues(config, owned={0}) if config.stripe.enabled else []
            sync_worker = start_sync(
                config, storage, secrets, queue=meter.queue, followers=followers, metrics=metrics
            )
        else:
            watch_supervisor_sync(config, metrics)
        metrics.registry.register(UpgradeCollector(config.data_path))
        runner, urls = await _listen(app, config, tls, sockets, reuse_port=worker is not None)
        reloader = NodeReloader(config, secrets, reload_config, app[ROUTER_KEY], tls)
        # The handlers are in place before anyone hears we serve: a SIGTERM sent as soon as
        # READY or the announcement arrives then drains, instead of killing the process.
        with _stop_signals(on_reload=lambda: _reload(reloader, notifier)) as stop:
            if runtime is not None:
                refuse_upgrades(config.data_path)
                runtime.publish(config.node_id, urls)
            announce(
                f"edge-node listening on {' and '.join(urls)}"
                f" (node {config.node_id}, data dir {config.data_path.resolve()})"
            )
            _tell_ready(notifier, urls, worker)
            background = _background_tasks(notifier, meter.queue, config, worker)
            await stop.wait()
        notifier.stopping("stopping: draining in-flight requests")
        await stop_accepting(runner)
        await runner.cleanup()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if sync_worker is not None:
            await sync_worker.stop(SYNC_STOP_GRACE_SECONDS)
        if meter is not None:
            notifier.status("stopping: committing the usage queue")
            await meter.close()
        storage.close()
        if limiter is not None:
            limiter.close()
        if runtime is not None:
            runtime.remove()


def _usage_source(config: Config) -> UsageSource:
    """The tenants' usage API's source: billing's records in the data directory."""
    from sync.billing.usage_view import LocalUsage  # noqa: PLC0415 (reads files only)

    return LocalUsage(config.data_path)


def _tell_ready(notifier: ServiceNotifier, urls: list[str], worker: int | None) -> None:
    if worker is not None:  # which code this worker runs, for its supervisor's upgrades
        notifier.send(f"{VERSION_FIELD}={__version__}")
    notifier.ready(f"serving on {' and '.join(urls)}")


def open_shared_limiter(config: Config, fd: int | None) -> SharedRateLimiter | None:
    """A worker's view of its supervisor's rate-limit buckets; None (the worker's own
    buckets, a tenant's limit then per worker) for a worker started without them."""
    if fd is None:
        log.warning(
            "worker started without --buckets-fd: rate limits apply per worker, not per node"
        )
        return None
    return SharedRateLimiter(fd, config.rate_limit.per_minute)


async def _listen(
    app: web.Application,
    config: Config,
    tls: ReloadableTls | None,
    sockets: WorkerSockets,
    *,
    reuse_port: bool,
) -> tuple[web.AppRunner, list[str]]:
    """The app listening on server.host:server.port, every address of the host (shared with
    other workers if `reuse_port`), or on the supervisor's listening sockets once the
    worker's own /readyz says it is ready; SIGTERM's drain waits
    server.shutdown_grace_seconds for requests. With the runner, the URLs served, in the
    order the host's addresses resolve."""
    runner = LimitedAppRunner(
        app,
        config.limits,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_grace_seconds,
    )
    await runner.setup()
    ssl_context = None if tls is None else tls.context
    if not sockets.listen_fds:
        host, port = config.server.host, config.server.port
        listeners = open_listeners(host, port, reuse_port=reuse_port)
        sites = [ListenerSite(runner, listener, ssl_context=ssl_context) for listener in listeners]
    else:
        sites = await inherited_sites(runner, sockets, ssl_context)
    for site in sites:
        await site.start()
    return runner, [site.name for site in sites]


def _background_tasks(
    notifier: ServiceNotifier,
    queue: WriteAheadQueue | None,
    config: Config,
    worker: int | None,
) -> list[asyncio.Task[None]]:
    """The watchdog pings, the check of the queue's older segments, and for a worker its
    supervisor watch and cursor adoption."""
    tasks = [asyncio.create_task(notifier.run_watchdog(), name="watchdog")]
    if queue is not None:
        tasks.append(asyncio.create_task(_verify(queue), name="queue-verify"))
    if worker is not None:
        tasks.append(asyncio.create_task(_stop_with_supervisor(os.getppid())))
        if queue is not None:
            tasks.append(asyncio.create_task(_adopt_cursors(queue, config)))
    return tasks


async def _verify(queue: WriteAheadQueue) -> None:
    await queue.verify()  # counts and logs what it finds


def queue_directory(config: Config, worker: int = 0) -> Path:
    """Each worker process owns its queue directory, so no two ever share a segment."""
    return config.data_path / "queue" / f"worker-{worker}"


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the daemon's coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main)
    else:
        uvloop.run(main)


@contextlib.contextmanager
def _stop_signals(on_reload: Callable[[], None] | None = None) -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT (SIGHUP calls `on_reload`) while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _reload(reloader: NodeReloader, notifier: ServiceNotifier) -> None:
    # Runs on the event loop between requests: a request holds the secrets it read, so none
    # fails half-way; a file that cannot be read keeps its old secret (logged by SecretFile).
    notifier.reloading("reloading secrets and configuration")
    ok = reloader.reload()
    notifier.ready(f"reload {reloader.reloads} {'done' if ok else 'kept some old values'}")


def lock_data_dir(config: Config) -> DirectoryLock:
    """The lock of the serving instance (a single process or the supervisor) on the data
    directory, data_dir/queue/lock: QueueLocked while another instance serves it."""
    root = config.data_path / "queue"
    root.mkdir(parents=True, exist_ok=True)
    try:
        return DirectoryLock.acquire(root)
    except QueueLocked as exc:
        raise DataDirLocked(config.data_path, exc.owner_pid) from None


class DataDirLocked(QueueLocked):
    """Another instance (a single process or a supervisor) serves the data directory."""

    def __init__(self, data_dir: Path, owner_pid: int | None) -> None:
        super().__init__(data_dir / "queue", owner_pid)
        owner = f"process {owner_pid}" if owner_pid else "another process"
        self.args = (f"{data_dir} is served by {owner}",)

    def __str__(self) -> str:
        return str(self.args[0])


def follow_queues(config: Config, owned: set[int], slots: int | None = None) -> list[QueueFollower]:
    """Followers of every worker queue directory on disk or among the `slots` indexes (by
    default `config.workers.count`) whose index is not `owned` by this process: the usage
    flush must drain all of them, including those left by an earlier run with more workers."""
    root = config.data_path / "queue"
    slots = config.workers.count if slots is None else slots
    indexes = set(range(slots)) | {
        int(path.name.removeprefix("worker-"))
        for path in root.glob("worker-*")
        if path.name.removeprefix("worker-").isdigit()
    }
    return [
        QueueFollower(queue_directory(config, index), BILLING_CONSUMER)
        for index in sorted(indexes - owned)
        if queue_directory(config, index).is_dir() or index < slots
    ]


async def _stop_with_supervisor(supervisor_pid: int) -> None:
    """A worker whose supervisor died (it was SIGKILLed) stops as on SIGTERM, draining,
    rather than hold the port and its queue with no one to restart or stop it."""
    while True:
        await asyncio.sleep(SUPERVISOR_CHECK_SECONDS)
        if os.getppid() != supervisor_pid:
            break
    log.error("the supervisor (pid %d) is gone: stopping this worker", supervisor_pid)
    os.kill(os.getpid(), signal.SIGTERM)


async def _adopt_cursors(queue: WriteAheadQueue, config: Config) -> None:
    """A worker's queue is flushed by the supervisor's follower: take up its cursor, so that
    consumed segments are deleted here, where the lock is held."""
    while True:
        await asyncio.sleep(config.billing.poll_interval_seconds)
        try:
            await queue.adopt_cursors()
        except Exception:  # a damaged cursor file must not stop serving; logged each round
            log.exception("cannot take up the usage flush's cursor of %s", queue.directory)


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
