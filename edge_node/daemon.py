"""Running the node: open storage, serve HTTP until SIGTERM or SIGINT, then stop cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from edge_node.app import NodeStorage, create_app
from edge_node.config import Config
from edge_node.meter import Meter, open_meter

SYNC_STOP_GRACE_SECONDS = 5.0


class BackgroundWorker(Protocol):
    """What serve() needs of the sync worker, named without importing the sync package."""

    async def stop(self, grace: float = ...) -> None: ...


async def serve(config: Config, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until told to stop; in-flight requests get the configured grace period."""
    storage = NodeStorage.open(config)
    meter: Meter | None = None
    sync_worker: BackgroundWorker | None = None
    try:
        meter = await open_meter(
            config.meter, config.queue, queue_directory(config), config.node_id
        )
        app = create_app(config, storage, meter)
        sync_worker = start_sync(config, storage)
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
        (announce or _print)(
            f"edge-node listening on http://{host}:{port}"
            f" (node {config.node_id}, data dir {config.data_path.resolve()})"
        )
        await _wait_for_stop_signal()
        await runner.cleanup()
    finally:
        if sync_worker is not None:
            await sync_worker.stop(SYNC_STOP_GRACE_SECONDS)
        if meter is not None:
            await meter.close()
        storage.close()


def start_sync(config: Config, storage: NodeStorage) -> BackgroundWorker | None:
    """Start the sync worker when central.dsns is set; None for a standalone node."""
    if not config.central.dsns:
        return None
    # Imported here: a standalone node, and the request path, never load the sync package
    # or its PostgreSQL driver.
    from sync.rounds import EdgeStorage  # noqa: PLC0415
    from sync.worker import SyncWorker  # noqa: PLC0415

    worker = SyncWorker(
        config.central,
        EdgeStorage(storage.registry, storage.stores),
        node_id=config.node_id,
        data_dir=config.data_path,
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


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
