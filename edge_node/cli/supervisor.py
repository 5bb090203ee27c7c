"""`serve --workers N`: N serving processes on one port, and one supervisor over them.

The supervisor holds the data directory's lock, listens on the port itself (on every address
server.host resolves to) and starts each worker as `edge-node serve --worker-index I
--listen-fd FD [--also-listen-fd FD...]`: a process of its own that accepts connections
from those inherited sockets, once its own /readyz says it is ready
(health_socket.py), and owns queue/worker-I. SIGUSR2 replaces the workers by a new generation
started from the code installed now, and rolls back when it fails (upgrade.py,
generations.py). Each worker reports to the supervisor with the service manager's own
protocol: the supervisor
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
import time
from collections.abc import Callable, Iterator

from edge_node.admission.shared_limits import create_buckets
from edge_node.cli.daemon import follow_queues, lock_data_dir, queue_directory
from edge_node.cli.generations import (
    BANKS,
    Generation,
    Worker,
    WorkerCommand,
    open_node_listeners,
    worker_indexes,
)
from edge_node.cli.health_socket import VERSION_FIELD
from edge_node.cli.reload import NodeReloader
from edge_node.cli.runtime_file import RuntimeFile
from edge_node.cli.sd_notify import ServiceNotifier, socket_address
from edge_node.cli.sync_start import SYNC_STOP_GRACE_SECONDS, BackgroundWorker, start_sync
from edge_node.cli.upgrade import Upgrader
from edge_node.cli.worker_stop import stop_workers
from edge_node.config import Config, ServiceEnvironment, child_environment
from edge_node.http.app import NodeStorage, secret_check_interval
from edge_node.secrets import SecretFiles
from edge_node.web.accepting import listener_url
from edge_node.web.tls import open_tls

log = logging.getLogger(__name__)

EXIT_ABORTED = 1
FATAL_EXITS = (75, 78)  # locked data directory, configuration error: restarting cannot help


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
        self._generations: list[Generation] = []  # the serving one first, then one upgrading
        self._upgrade_requested = asyncio.Event()
        self._listeners: list[socket.socket] = []  # one per address of server.host
        self._port = 0
        self._buckets_fd: int | None = None
        self._unclean_stops = 0

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status: 0 when every worker running then
        stopped cleanly (one dead and waiting for its restart does not count)."""
        open_tls(self.config.tls)  # a certificate that does not load stops us here, not N times
        lock = lock_data_dir(self.config)
        self._listeners = open_node_listeners(self.config.server.host, self.config.server.port)
        try:
            self._port = self._listeners[0].getsockname()[1]
            # One table of rate-limit buckets for every worker
            # (edge_node/admission/shared_limits.py).
            self._buckets_fd = create_buckets()
            await self._supervise()
        finally:
            for generation in self._generations:
                self._close_channels(generation)
            for listener in self._listeners:
                listener.close()
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
        first = self._start_generation(0)
        first.on_probation = False
        tasks = [asyncio.create_task(self._notifier.run_watchdog())]
        tasks.append(asyncio.create_task(self._check_worker_watchdogs()))
        secret_files = SecretFiles(check_interval=secret_check_interval(self.config))
        # The workers re-read the configuration; here only the sync worker's secrets reload.
        reloader = NodeReloader(self.config, secret_files)
        storage: NodeStorage | None = None
        sync_worker: BackgroundWorker | None = None
        try:
            with self._signals(reloader):
                if await self._all_ready(first):
                    storage = NodeStorage.open(self.config)
                    # Both banks of queue directories: the workers of an upgrade use the other.
                    slots = BANKS * self.config.workers.count
                    for index in range(slots):  # a follower needs its directory to exist
                        queue_directory(self.config, index).mkdir(exist_ok=True)
                    followers = follow_queues(self.config, owned=set(), slots=slots)
                    sync_worker = start_sync(
                        self.config, storage, secret_files, followers=followers
                    )
                    self._announce_ready()
                    tasks.append(asyncio.create_task(self._upgrade_on_request()))
                    await self._stopping.wait()
                self._notifier.stopping("stopping: draining the workers")
        finally:
            self._stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            workers = [w for g in self._generations for w in g.workers]
            unclean = await stop_workers(workers, self.config.server.shutdown_grace_seconds)
            self._unclean_stops += unclean
            await asyncio.gather(*(t for g in self._generations for t in g.tasks))
            if sync_worker is not None:
                await sync_worker.stop(SYNC_STOP_GRACE_SECONDS)
            if storage is not None:
                storage.close()

    # Generations and upgrades.

    def _start_generation(self, number: int) -> Generation:
        """Start generation `number`'s workers (on probation until admitted)."""
        indexes = worker_indexes(number, self.config.workers.count)
        generation = Generation(number, [self._new_worker(i) for i in indexes], on_probation=True)
        generation.tasks = [
            asyncio.create_task(self._keep_running(worker, generation))
            for worker in generation.workers
        ]
        self._generations.append(generation)
        return generation

    async def _retire(self, generation: Generation) -> None:
        """Drain and stop `generation`'s workers, as on SIGTERM, and forget them."""
        generation.retired.set()
        unclean = await stop_workers(
            generation.workers,
            self.config.server.shutdown_grace_seconds,
            admitted=not generation.on_probation,
        )
        self._unclean_stops += unclean  # added once stopped: another stop may end meanwhile
        await asyncio.gather(*generation.tasks)
        self._close_channels(generation)
        self._generations.remove(generation)

    async def _upgrade_on_request(self) -> None:
        """Upgrade each time SIGUSR2 asks, one upgrade at a time."""
        upgrader = Upgrader(
            self.config.workers,
            self.config.data_path,
            start=self._start_generation,
            retire=self._retire,
            status=lambda text: self._notifier.status(self._serving(text)),
        )
        await upgrader.run(self._upgrade_requested, lambda: self._generations[0])

    def _request_upgrade(self) -> None:
        if self._upgrade_requested.is_set():
            log.warning("SIGUSR2: an upgrade is already under way; this one is ignored")
        self._upgrade_requested.set()

    # Workers.

    def _new_worker(self, index: int) -> Worker:
        name = f"@edge-node/{os.getpid()}/{secrets.token_hex(6)}/worker-{index}"
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        channel.bind(socket_address(name))
        channel.setblocking(False)
        worker = Worker(index, name, f"{name}/health", channel)
        asyncio.get_running_loop().add_reader(channel.fileno(), self._receive, worker)
        return worker

    def _close_channels(self, generation: Generation) -> None:
        loop = asyncio.get_running_loop()
        for worker in generation.workers:
            if worker.channel.fileno() >= 0:
                loop.remove_reader(worker.channel.fileno())
                worker.channel.close()

    async def _spawn(self, worker: Worker) -> None:
        extra = {"NOTIFY_SOCKET": worker.notify_name}
        if self._service.watchdog_usec:
            extra["WATCHDOG_USEC"] = str(self._service.watchdog_usec)
        command = [*self._command(worker.index, self.config.server.host, self._port)]
        shared = tuple(listener.fileno() for listener in self._listeners)
        command += ["--listen-fd", str(shared[0])]
        for listen_fd in shared[1:]:  # the host's other addresses
            command += ["--also-listen-fd", str(listen_fd)]
        command += ["--health-socket", worker.health_name]
        if self._buckets_fd is not None:
            command += ["--buckets-fd", str(self._buckets_fd)]
            shared += (self._buckets_fd,)
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

    async def _keep_running(self, worker: Worker, generation: Generation) -> None:
        """Start the worker, and start it again each time it dies, until stopping or its
        generation is retired; one on probation is not restarted: its upgrade fails."""
        while not self._stopping.is_set() and not generation.retired.is_set():
            try:
                await self._spawn(worker)
            except OSError as exc:
                if generation.on_probation:
                    generation.failure = f"worker {worker.index} could not start: {exc}"
                    return
                self._abort = EXIT_ABORTED
                self._stopping.set()
                return
            assert worker.process is not None
            if self._stopping.is_set():  # stopped while this one was starting
                worker.process.terminate()
            code = await worker.process.wait()
            if self._stopping.is_set() or generation.retired.is_set():
                return
            if generation.on_probation:
                generation.failure = f"worker {worker.index} exited with status {code}"
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
                for found in fields:
                    if found.startswith(f"{VERSION_FIELD}="):
                        worker.version = found.partition("=")[2]
                if "READY=1" in fields and not worker.ready:
                    worker.ready = True
                    if worker.restarts:
                        self._notifier.status(self._serving(f"worker {worker.index} restarted"))

    async def _all_ready(self, generation: Generation) -> bool:
        """Wait until every worker has said READY; False if told to stop first."""
        while not generation.ready:
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
            for worker in [w for g in self._generations for w in g.workers]:
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

    # Signals and announcements.

    @contextlib.contextmanager
    def _signals(self, reloader: NodeReloader) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload, reloader)
        loop.add_signal_handler(signal.SIGUSR2, self._request_upgrade)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
                loop.remove_signal_handler(sig)

    def _reload(self, reloader: NodeReloader) -> None:
        self._notifier.reloading("reloading: forwarding SIGHUP to the workers")
        for worker in [w for g in self._generations for w in g.workers]:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)
        reloader.reload()
        self._notifier.ready(self._serving(f"reload {reloader.reloads} forwarded"))

    def _serving(self, note: str = "") -> str:
        text = f"serving on {' and '.join(self._urls())}"
        text += f" with {self.config.workers.count} workers"
        return f"{text}; {note}" if note else text

    def _urls(self) -> list[str]:
        return [listener_url(listener, tls=self.config.tls.enabled) for listener in self._listeners]

    def _announce_ready(self) -> None:
        urls = self._urls()
        self._runtime.publish(self.config.node_id, urls)
        self._announce(
            f"edge-node listening on {' and '.join(urls)}"
            f" (node {self.config.node_id}, data dir {self.config.data_path.resolve()},"
            f" {self.config.workers.count} workers)"
        )
        self._notifier.ready(self._serving())


def _print(line: str) -> None:
    print(line, flush=True)


def run_supervisor(supervisor: Supervisor) -> int:
    """Run the supervisor on asyncio's loop (it serves no requests itself)."""
    return asyncio.run(supervisor.run())
