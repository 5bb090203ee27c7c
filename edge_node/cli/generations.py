"""The supervisor's workers, in generations, and the listening sockets they all accept from.

A generation is the set of N workers started together from the code installed at that time:
the first at start, one more at each upgrade (edge_node/cli/upgrade.py). Each worker owns a
queue directory, `queue/worker-I`, locked while it runs; two generations serve side by side
while one hands over to the next, so they use two banks of indexes in turn: generation G's
worker J has index (G mod 2) * N + J. A new generation never opens a directory a worker of
the old one still holds, and by the next upgrade the old bank is free again (an upgrade ends
only once the generation it replaces has stopped). What an old worker metered and the usage
flush has not sent yet stays in its directory, where the supervisor's flush keeps reading
it (it follows both banks), and the next worker of that bank takes the directory over.

The supervisor listens itself and hands the socket to every worker: connections wait in
its one accept queue, so a worker that stops accepting leaves none behind to be refused.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_node.web.accepting import open_listeners

BANKS = 2
DEFER_ACCEPT_SECONDS = 10  # after that long without a byte, a connection is accepted anyway

WorkerCommand = Callable[[int, str, int], Sequence[str]]


@dataclass
class Worker:
    """One worker process as the supervisor sees it."""

    index: int
    notify_name: str
    health_name: str
    channel: socket.socket
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    version: str | None = None
    last_ping: float = 0.0
    deaths_in_a_row: int = 0
    restarts: int = 0


@dataclass
class Generation:
    """The workers started together; `on_probation` until an upgrade to it has completed."""

    number: int
    workers: list[Worker]
    on_probation: bool = False
    failure: str | None = None
    retired: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(worker.ready for worker in self.workers)

    @property
    def versions(self) -> list[str]:
        return sorted({worker.version for worker in self.workers if worker.version})


def worker_indexes(generation: int, count: int) -> range:
    """The queue directory indexes of generation `generation` of `count` workers."""
    bank = generation % BANKS
    return range(bank * count, (bank + 1) * count)


def open_node_listeners(host: str, port: int) -> list[socket.socket]:
    """The node's listening sockets on (host, port), one per address `host` resolves to (port
    0 picks one for all), for the workers. A connection is accepted once its first bytes are
    in, so a worker that accepts it reads its request at once, even when it begins to drain
    right after."""
    return open_listeners(host, port, defer_accept_seconds=DEFER_ACCEPT_SECONDS)


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
