"""`serve --workers N`: N serving processes on one port, and one supervisor over them.

The supervisor holds the data directory's lock, reserves the port (bound with SO_REUSEPORT,
never listening, so port 0 becomes one real port every worker shares) and starts each worker
as `edge-node serve --worker-index I`: a process of its own that listens on that port with
SO_REUSEPORT (the kernel spreads connections across them) and owns queue/worker-I. Each
worker reports to the supervisor with the service manager's own protocol: the supervisor
gives it a NOTIFY_SOCKET of its own (and, under a systemd watchdog, WATCHDOG_USEC), so a
worker that dies, or whose loop stops pinging, is restarted after a delay that doubles
with each death in a row. SIGTERM and SIGHUP are forwarded to every worker.

The sync worker (central PostgreSQL, Stripe provisioning and the usage flush) runs here,
once per node: the flush follows every worker's queue directory (queue/follower.py).
The supervisor tells systemd READY once every worker is ready, and pings its watchdog
from its own loop. It creates the table of rate-limit buckets every worker takes tokens
from (shared_limits.py) and hands its descriptor to each, so a tenant's limit is the
node's, however many workers serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from edge_node.admission.shared_limits import create_buckets
from edge_node.cli.daemon import (
    SYNC_STOP_GRACE_SECONDS,
    BackgroundWorker,
    follow_queues,
    lock_data_dir,
    start_sync,
)
from edge_node.cli.reload import NodeReloader
from edge_node.cli.runtime_file import RuntimeFile
from edge_node.cli.sd_notify import ServiceNotifier, socket_address
from edge_node.config import Config, ServiceEnvironment, child_environment
from edge_node.http.app import NodeStorage, secret_check_interval
from edge_node.secrets import SecretFiles
from edge_node.web.tls import open_tls

log = logging.getLogger(__name__)

EXIT_ABORTED = 1
FATAL_EXITS = (75, 78)  # locked data directory, configuration error: restarting cannot help
STOP_MARGIN_SECONDS = 5.0

WorkerCommand = Callable[[int, str, int], Sequence[str]]


@dataclass
class Worker:
    """One worker process as the supervisor sees it."""

    index: int
    notify_name: str
    channel: socket.socket
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    last_ping: float = 0.0
    deaths_in_a_row: int = 0
    restarts: int = 0


class Supervisor:
    """Runs `config.workers.count` workers until SIGTERM; `command(index, host, port)` is the
    command line of worker `index`."""

    def __init__(
        self,
        config: Config,
        command: WorkerCommand,
        *,
        service: ServiceEnvironment | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._command = command
        self._service = service or ServiceEnvironment()
        self._notifier = ServiceNotifier(self._service)
        self._announce = announce or _print
        self._runtime = RuntimeFile(config.data_path)  # what `edge-node status` reads
        self._stopping = asyncio.Event()
        self._abort: int | None = None
        self._workers: list[Worker] = []
        self._port = 0
        self._buckets_fd: int | None = None
        self._unclean_stops = 0

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status: 0 when every worker running then
        stopped cleanly (one dead and waiting for its restart does not count)."""
        open_tls(self.config.tls)  # a certificate that does not load stops us here, not N times
        lock = lock_data_dir(self.config)
        reservation = _reserve_port(self.config.server.host, self.config.server.port)
        try:
            self._port = reservation.getsockname()[1]
            # One table of rate-limit buckets for every worker
            # (edge_node/admission/shared_limits.py).
            self._buckets_fd = create_buckets()
            self._workers = [self._new_worker(i) for i in range(self.config.workers.count)]
            await self._supervise()
        finally:
            loop = asyncio.get_running_loop()
            for worker in self._workers:
                loop.remove_reader(worker.channel.fileno())
                worker.channel.close()
            reservation.close()
            if self._buckets_fd is not None:
                os.close(self._buckets_fd)
            self._notifier.close()
            self._runtime.remove()
            lock.release()
        if self._abort is not None:
            return self._abort
        return EXIT_ABORTED if self._unclean_stops else 0

    async def _supervise(self) -> None:
        """Keep the workers running and, once all are ready, the sync worker; then stop all."""
        tasks = [asyncio.create_task(self._keep_running(w)) for w in self._workers]
        tasks.append(asyncio.create_task(self._notifier.run_watchdog()))
        tasks.append(asyncio.create_task(self._check_worker_watchdogs()))
        secret_files = SecretFiles(check_interval=secret_check_interval(self.config))
        # The workers re-read the configuration; here only the sync worker's secrets reload.
        reloader = NodeReloader(self.config, secret_files)
        storage: NodeStorage | None = None
        sync_worker: BackgroundWorker | None = None
        try:
            with self._signals(reloader):
                if await self._all_ready():
                    storage = NodeStorage.open(self.config)
                    followers = follow_queues(self.config, owned=set())
                    sync_worker = start_sync(
                        self.config, storage, secret_files, followers=followers
                    )
                    self._announce_ready()
                    await self._stopping.wait()
                self._notifier.stopping("stopping: draining the workers")
        finally:
            self._stopping.set()
            await self._stop_workers()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if sync_worker is not None:
                await sync_worker.stop(SYNC_STOP_GRACE_SECONDS)
            if storage is not None:
                storage.close()

    # Workers.

    def _new_worker(self, index: int) -> Worker:
        name = f"@edge-node/{os.getpid()}/{secrets.token_hex(6)}/worker-{index}"
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        channel.bind(socket_address(name))
        channel.setblocking(False)
        worker = Worker(index, name, channel)
        asyncio.get_running_loop().add_reader(channel.fileno(), self._receive, worker)
        return worker

    async def _spawn(self, worker: Worker) -> None:
        extra = {"NOTIFY_SOCKET": worker.notify_name}
        if self._service.watchdog_usec:
            extra["WATCHDOG_USEC"] = str(self._service.watchdog_usec)
        command = [*self._command(worker.index, self.config.server.host, self._port)]
        shared: tuple[int, ...] = ()
        if self._buckets_fd is not None:
            command += ["--buckets-fd", str(self._buckets_fd)]
            shared = (self._buckets_fd,)
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *command,
                env=child_environment(extra),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=shared,
            )
        except OSError as exc:
            log.error("cannot start worker %d (%s): %s", worker.index, command[0], exc)
            raise
        worker.started_at = worker.last_ping = time.monotonic()
        worker.ready = False

    async def _keep_running(self, worker: Worker) -> None:
        """Start the worker, and start it again each time it dies, until stopping."""
        while not self._stopping.is_set():
            try:
                await self._spawn(worker)
            except OSError:
                self._abort = EXIT_ABORTED
                self._stopping.set()
                return
            assert worker.process is not None
            if self._stopping.is_set():  # stopped while this one was starting
                worker.process.terminate()
            code = await worker.process.wait()
            if self._stopping.is_set():
                return
            if code in FATAL_EXITS and not worker.ready:
                log.error("worker %d cannot start (exit status %d): stopping", worker.index, code)
                self._abort = code
                self._stopping.set()
                return
            delay = self._restart_delay(worker)
            worker.restarts += 1
            log.error(
                "worker %d (pid %d) exited with status %d; restarting it in %.2f s",
                worker.index,
                worker.process.pid,
                code,
                delay,
            )
            self._notifier.status(
                f"worker {worker.index} exited ({code}), restart {worker.restarts} in {delay:.2f} s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _restart_delay(self, worker: Worker) -> float:
        settings = self.config.workers
        if time.monotonic() - worker.started_at >= settings.restart_delay_max_seconds:
            worker.deaths_in_a_row = 0
        worker.deaths_in_a_row += 1
        delay = settings.restart_delay_seconds * 2 ** (worker.deaths_in_a_row - 1)
        return float(min(delay, settings.restart_delay_max_seconds))

    def _receive(self, worker: Worker) -> None:
        """A notify datagram from the worker: READY, WATCHDOG or STATUS."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                fields = worker.channel.recv(4096).decode(errors="replace").splitlines()
                worker.last_ping = time.monotonic()
                if "READY=1" in fields and not worker.ready:
                    worker.ready = True
                    if worker.restarts:
                        self._notifier.status(self._serving(f"worker {worker.index} restarted"))

    async def _all_ready(self) -> bool:
        """Wait until every worker has said READY; False if told to stop first."""
        while not all(w.ready for w in self._workers):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.05)
            if self._stopping.is_set():
                return False
        return True

    async def _check_worker_watchdogs(self) -> None:
        """Kill a ready worker whose pings stopped for the watchdog timeout (it gets restarted)."""
        if not self._service.watchdog_usec:
            return
        timeout = self._service.watchdog_usec / 1e6
        while not self._stopping.is_set():  # a stopping worker is timed by the stop grace
            await asyncio.sleep(timeout / 4)
            for worker in self._workers:
                silent = time.monotonic() - worker.last_ping
                if worker.ready and worker.process is not None and silent > timeout:
                    log.error(
                        "worker %d sent no watchdog ping for %.1f s: killing it",
                        worker.index,
                        silent,
                    )
                    worker.ready = False
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker, then SIGKILL to any still running after the grace period."""
        running = [w.process for w in self._workers if w.process and w.process.returncode is None]
        # A worker still starting has served nothing; SIGTERM before its handlers exist ends
        # it by the signal itself, which is a clean stop for it.
        starting = {w.process.pid for w in self._workers if w.process and not w.ready}
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        grace = self.config.server.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        waits = [asyncio.create_task(process.wait()) for process in running]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for process in running:
                if process.returncode is None:
                    log.error("worker pid %d did not stop in %.0f s: killed", process.pid, grace)
                    process.kill()
            await asyncio.gather(*waits, return_exceptions=True)
        for process in running:
            stopped_starting = process.pid in starting and process.returncode == -signal.SIGTERM
            if process.returncode != 0 and not stopped_starting:
                self._unclean_stops += 1
                log.error(
                    "worker pid %d stopped with exit status %s", process.pid, process.returncode
                )

    # Signals and announcements.

    @contextlib.contextmanager
    def _signals(self, reloader: NodeReloader) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload, reloader)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _reload(self, reloader: NodeReloader) -> None:
        self._notifier.reloading("reloading: forwarding SIGHUP to the workers")
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)
        reloader.reload()
        self._notifier.ready(self._serving(f"reload {reloader.reloads} forwarded"))

    def _serving(self, note: str = "") -> str:
        scheme = "https" if self.config.tls.enabled else "http"
        text = f"serving on {scheme}://{self.config.server.host}:{self._port}"
        text += f" with {len(self._workers)} workers"
        return f"{text}; {note}" if note else text

    def _announce_ready(self) -> None:
        scheme = "https" if self.config.tls.enabled else "http"
        url = f"{scheme}://{self.config.server.host}:{self._port}"
        self._runtime.publish(self.config.node_id, [url])
        self._announce(
            f"edge-node listening on {scheme}://{self.config.server.host}:{self._port}"
            f" (node {self.config.node_id}, data dir {self.config.data_path.resolve()},"
            f" {len(self._workers)} workers)"
        )
        self._notifier.ready(self._serving())


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and never listening: it fixes the
    port (port 0 picks one) so every worker binds the same, and holds it while they restart."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reservation = socket.socket(family, kind, proto)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(address)
    except BaseException:
        reservation.close()
        raise
    return reservation


def worker_command(config_file: str | None, data_dir: str | None) -> WorkerCommand:
    """The command line of a worker: `edge-node serve --worker-index I` on the reserved port,
    with the supervisor's own --config and --data-dir."""
    options = [] if config_file is None else ["--config", config_file]
    if data_dir is not None:
        options += ["--data-dir", data_dir]

    def command(index: int, host: str, port: int) -> list[str]:
        serve = ["serve", "--host", host, "--port", str(port), "--worker-index", str(index)]
        return [sys.executable, "-m", "edge_node.cli", *options, *serve]

    return command


def _print(line: str) -> None:
    print(line, flush=True)


def run_supervisor(supervisor: Supervisor) -> int:
    """Run the supervisor on asyncio's loop (it serves no requests itself)."""
    return asyncio.run(supervisor.run())
