"""Running the node: open storage, serve HTTP until SIGTERM or SIGINT, then stop cleanly.

SIGHUP re-reads every secret file (webhook signing secrets, the Stripe API key) in place.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from edge_node.app import NodeStorage, create_app, secret_check_interval
from edge_node.config import Config
from edge_node.meter import Meter, open_meter
from edge_node.queue import WriteAheadQueue
from edge_node.runtime_file import RuntimeFile
from edge_node.secrets import SecretFiles

log = logging.getLogger(__name__)

SYNC_STOP_GRACE_SECONDS = 5.0


class BackgroundWorker(Protocol):
    """What serve() needs of the sync worker, named without importing the sync package."""

    async def stop(self, grace: float = ...) -> None: ...


async def serve(config: Config, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until told to stop; in-flight requests get the configured grace period."""
    storage = NodeStorage.open(config)
    meter: Meter | None = None
    sync_worker: BackgroundWorker | None = None
    runtime = RuntimeFile(config.data_path)
    try:
        meter = await open_meter(
            config.meter, config.queue, queue_directory(config), config.node_id
        )
        secrets = SecretFiles(check_interval=secret_check_interval(config))
        app = create_app(config, storage, meter, secrets=secrets)
        sync_worker = start_sync(config, storage, secrets, queue=meter.queue)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=config.server.shutdown_grace_seconds,
        )
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port, backlog=1024)
        await site.start()
        host, port = _bound_address(runner)
        runtime.publish(config.node_id, [f"http://{host}:{port}"])
        (announce or _print)(
            f"edge-node listening on http://{host}:{port}"
            f" (node {config.node_id}, data dir {config.data_path.resolve()})"
        )
        await _wait_for_stop_signal(on_reload=lambda: _reload_secrets(secrets))
        await runner.cleanup()
    finally:
        if sync_worker is not None:
            await sync_worker.stop(SYNC_STOP_GRACE_SECONDS)
        if meter is not None:
            await meter.close()
        storage.close()
        runtime.remove()


def start_sync(
    config: Config,
    storage: NodeStorage,
    secrets: SecretFiles | None = None,
    *,
    queue: WriteAheadQueue | None = None,
) -> BackgroundWorker | None:
    """Start the sync worker when central.dsns or stripe.api_key_file is set; None for a
    standalone node. With Stripe it also runs the Stripe jobs (provisioning, and with the
    meter's `queue` the usage flush)."""
    if not config.central.dsns and not config.stripe.enabled:
        return None
    # Imported here: a standalone node, and the request path, never load the sync package,
    # its PostgreSQL driver or the Stripe SDK.
    from sync.rounds import EdgeStorage  # noqa: PLC0415
    from sync.worker import SyncWorker  # noqa: PLC0415

    jobs = []
    if config.stripe.enabled:
        from sync.stripe_jobs import stripe_jobs  # noqa: PLC0415

        secrets = secrets or SecretFiles(check_interval=secret_check_interval(config))
        api_key = secrets.open(config.stripe.api_key_file, name="stripe.api_key_file")
        jobs = stripe_jobs(config, storage.registry, api_key.value, queue=queue)
    worker = SyncWorker(
        config.central,
        EdgeStorage(storage.registry, storage.stores),
        node_id=config.node_id,
        data_dir=config.data_path,
        jobs=jobs,
    )
    worker.start()
    return worker


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


def _bound_address(runner: web.AppRunner) -> tuple[str, int]:
    address = runner.addresses[0]
    return str(address[0]), int(address[1])


async def _wait_for_stop_signal(on_reload: Callable[[], None] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _reload_secrets(secrets: SecretFiles) -> None:
    # Runs on the event loop between requests: a request holds the secrets it read, so none
    # fails half-way; a file that cannot be read keeps its old secret (logged by SecretFile).
    if secrets.reload():
        log.info("SIGHUP: reloaded %d secret file(s)", len(secrets))


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
