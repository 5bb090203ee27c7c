"""The system under test: a central PostgreSQL, the Stripe stand-in and edge-node daemons.

Each edge node is a real `edge-node serve` process with its own data directory, started
through tests/system/skewed_clock.py so its wall clock can be moved, and it reaches
PostgreSQL and Stripe only through fault proxies of its own (tests/fault_proxy.py), so a
schedule can partition, slow or break one node's links without touching the others. The
tuning (sync interval, billing window, poll intervals, timeouts) is ordinary configuration,
given as EDGE_NODE_* variables. The last node has a small usage queue (`queue.max_bytes` at
its 1 MiB minimum), so a schedule can fill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_node.queue import inspect_queue, tail_records
from edge_node.usage.meter import BILLING_CONSUMER
from sync.central.schema import migrate_dsns
from sync.stripe.standin import DEFAULT_API_KEY
from tests.cli.test_cli import clean_environment
from tests.fault_proxy import TcpProxy
from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"edge-node listening on (http://127\.0\.0\.1:(\d+)) ")
STANDIN_LISTENING = re.compile(r"stripe stand-in listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_SECONDS = 60.0
SMALL_QUEUE_BYTES = 1 << 20
SMALL_SEGMENT_BYTES = 64 << 10
# The small-queue node's data directory is a tmpfs of this size when the run is root, so the
# disk-full schedule can fill it; its free-space floor is set low to let most of it be used.
SMALL_DISK_BYTES = 128 << 20
SMALL_DISK_FLOOR_BYTES = 8 << 20
TAIL_RECORDS = 5000
# How long after a clock offset is set a request is sure to be stamped with it: the daemon
# polls its clock file every 50 ms from a thread, which a busy event loop can hold up.
CLOCK_FOLLOW_SECONDS = 1.0

# How the daemons are tuned for the test: every key exists in edge_node/config/__init__.py.
TUNING = {
    "EDGE_NODE_CENTRAL_SYNC_INTERVAL_SECONDS": "0.3",
    "EDGE_NODE_STRIPE_TIMEOUT_SECONDS": "2",
    "EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS": "0.5",
    "EDGE_NODE_BILLING_WINDOW_SECONDS": "1",
    "EDGE_NODE_BILLING_POLL_INTERVAL_SECONDS": "0.1",
    "EDGE_NODE_SERVER_SHUTDOWN_GRACE_SECONDS": "2",
    "EDGE_NODE_SECRETS_CHECK_INTERVAL_SECONDS": "0",
}


async def wait_for_line(
    path: Path, pattern: re.Pattern[str], alive: Callable[[], bool], within: float
) -> str:
    """The first match of `pattern` in the file a process writes, polling; fails if it dies."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if match := pattern.search(await asyncio.to_thread(_read, path)):
            return match.group(1)
        if not alive():
            break
        await asyncio.sleep(0.05)
    log = (await asyncio.to_thread(_read, path))[-3000:]
    raise RuntimeError(f"{path.name}: no {pattern.pattern!r} within {within} s\n{log}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass
class Standin:
    """`python -m sync.stripe.standin` in its own process, its output in a file."""

    process: asyncio.subprocess.Process
    url: str

    @classmethod
    async def start(cls, log: Path) -> Standin:
        with log.open("w") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sync.stripe.standin", "--port", "0",
                stdout=out, stderr=out, cwd=REPO,
            )  # fmt: skip
        url = await wait_for_line(
            log, STANDIN_LISTENING, lambda: process.returncode is None, START_TIMEOUT_SECONDS
        )
        return cls(process, url)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@dataclass
class EdgeDaemon:
    """One edge node: its data directory, its proxies, its clock, and its current process."""

    node_id: str
    root: Path
    env: dict[str, str]
    postgres: TcpProxy
    stripe: TcpProxy
    process: asyncio.subprocess.Process | None = None
    url: str | None = None
    port: int = 0
    incarnation: int = 0  # how many times it was started
    kills: int = 0
    clock_offset: float = 0.0
    previous_clock_offset: float = 0.0
    clock_set_at: float = 0.0  # time.monotonic() of the last set_clock_offset
    small_disk: bool = False  # data_dir is a tmpfs of SMALL_DISK_BYTES (disk-full schedule)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def clock_file(self) -> Path:
        return self.root / "clock-offset"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue" / "worker-0"

    @property
    def up(self) -> bool:
        return self.url is not None

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "tests.system.skewed_clock", str(self.clock_file),
            "--data-dir", str(self.data_dir), *args,
        ]  # fmt: skip

    def log_path(self, incarnation: int | None = None) -> Path:
        return self.root / f"daemon-{self.incarnation if incarnation is None else incarnation}.log"

    async def start(self) -> None:
        """Serve on the port it had before and wait until it listens. Should another socket
        have taken that port meanwhile (an ephemeral port of some client), any free one."""
        try:
            await self._start()
        except RuntimeError as exc:
            if self.port == 0 or "address already in use" not in str(exc):
                raise
            self.port = 0
            await self._start()

    async def _start(self) -> None:
        self.incarnation += 1
        with self.log_path().open("w") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command("serve", "--port", str(self.port)),
                stdout=log, stderr=log, env=self.env, cwd=REPO,
            )  # fmt: skip
        process = self.process
        try:
            url = await wait_for_line(
                self.log_path(),
                LISTENING,
                lambda: process.returncode is None,
                START_TIMEOUT_SECONDS,
            )
        except BaseException:  # not listening, or cancelled: no daemon left behind
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        self.port = int(url.rsplit(":", 1)[1])
        self.url = url

    async def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        self.url = None
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
            self.kills += 1

    async def stop(self) -> int | None:
        """SIGTERM, as an operator stops it; its exit status."""
        self.url = None
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return None

    def set_clock_offset(self, seconds: float) -> None:
        """Move this node's wall clock (the running process follows within 50 ms)."""
        self.previous_clock_offset, self.clock_offset = self.clock_offset, seconds
        self.clock_set_at = time.monotonic()
        scratch = self.clock_file.with_suffix(".tmp")
        scratch.write_text(repr(seconds))
        scratch.replace(self.clock_file)

    def followed_clock_offset(self) -> float:
        """The offset the process surely stamps with now: the new one only once it has had
        CLOCK_FOLLOW_SECONDS to read it (its polling thread can be late on a busy machine),
        else the lower of the old and the new."""
        if time.monotonic() - self.clock_set_at >= CLOCK_FOLLOW_SECONDS:
            return self.clock_offset
        return min(self.clock_offset, self.previous_clock_offset)

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """`edge-node --data-dir <this node> ...`, as an operator runs it beside the daemon."""
        process = await asyncio.create_subprocess_exec(
            *self.command(*args),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.env, cwd=REPO,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    def request_ids_on_queue(self) -> set[str]:
        """Request ids of the newest usage events on this node's queue (read without its
        lock, as `edge-node queue tail` does)."""
        return {event["request_id"] for event in self.usage_events(TAIL_RECORDS)}

    def usage_events(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` usage events still on the queue, oldest first."""
        return [json.loads(record.payload) for record in tail_records(self.queue_dir, count)]

    def queue_depth(self) -> int:
        status = inspect_queue(self.queue_dir)
        return status.consumers[BILLING_CONSUMER].depth if status.consumers else 0

    @contextlib.contextmanager
    def node_db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.data_dir / "node.sqlite", timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def tenant_db_path(self, tenant_id: str) -> Path:
        return self.data_dir / "tenants" / f"{tenant_id}.sqlite"

    def logs(self) -> str:
        return "".join(
            self.log_path(n).read_text(errors="replace")
            for n in range(1, self.incarnation + 1)
            if self.log_path(n).exists()
        )


@dataclass
class Cluster:
    root: Path
    postgres: PostgresServer
    database: str
    dsn: str
    standin: Standin
    nodes: list[EdgeDaemon]
    catalog_file: Path
    owns_database: bool = True
    notes: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, root: Path, postgres: PostgresServer, *, nodes: int = 3) -> Cluster:
        """PostgreSQL migrated, the stand-in bootstrapped, proxies healthy; daemons not yet."""
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        database = postgres.create_database()
        dsn = postgres.dsn(database)
        await migrate_dsns([dsn])
        standin = await Standin.start(root / "standin.log")
        key_file = root / "stripe.key"
        key_file.write_text(DEFAULT_API_KEY + "\n")
        cluster = cls(root, postgres, database, dsn, standin, [], root / "stripe-catalog.json")
        standin_port = int(standin.url.rsplit(":", 1)[1])
        for n in range(nodes):
            node_id = f"edge-{n + 1}"
            pg_proxy, stripe_proxy = TcpProxy(postgres.port), TcpProxy(standin_port)
            await pg_proxy.heal()
            await stripe_proxy.heal()
            env = clean_environment(
                PYTHONPATH=str(REPO),
                EDGE_NODE_NODE_ID=node_id,
                EDGE_NODE_CENTRAL_DSNS=json.dumps([pg_proxy.dsn(dsn)]),
                EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
                EDGE_NODE_STRIPE_API_BASE=stripe_proxy.url,
                EDGE_NODE_STRIPE_CATALOG_FILE=str(cluster.catalog_file),
                **TUNING,
            )
            if n == nodes - 1:
                env["EDGE_NODE_QUEUE_MAX_BYTES"] = str(SMALL_QUEUE_BYTES)
                env["EDGE_NODE_QUEUE_SEGMENT_BYTES"] = str(SMALL_SEGMENT_BYTES)
                env["EDGE_NODE_STORAGE_MIN_FREE_BYTES"] = str(SMALL_DISK_FLOOR_BYTES)
            daemon = EdgeDaemon(node_id, root / node_id, env, pg_proxy, stripe_proxy)
            daemon.root.mkdir()
            if n == nodes - 1:
                daemon.small_disk = await asyncio.to_thread(_mount_small_disk, daemon.data_dir)
            daemon.set_clock_offset(0.0)
            cluster.nodes.append(daemon)
        code, out, err = await cluster.nodes[0].cli("stripe", "bootstrap")
        if code != 0:
            raise RuntimeError(f"stripe bootstrap failed ({code}): {err or out}")
        return cluster

    @property
    def small_queue_node(self) -> EdgeDaemon:
        return self.nodes[-1]

    async def start_daemons(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes if not node.up))

    async def heal(self) -> None:
        """Every link healthy and every clock right."""
        for node in self.nodes:
            await node.postgres.heal()
            await node.stripe.heal()
            if node.clock_offset:
                node.set_clock_offset(0.0)

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()
            await node.postgres.close()
            await node.stripe.close()
            if node.small_disk:
                await asyncio.to_thread(_unmount, node.data_dir)
        await self.standin.stop()
        if self.owns_database:
            self.postgres.drop_database(self.database)

    async def standin_state(self) -> dict[str, Any]:
        state: dict[str, Any] = await asyncio.to_thread(self._standin_get, "state")
        return state

    async def standin_meter_events(self) -> list[tuple[str, str, int]]:
        """Every meter event the stand-in accepted: (identifier, customer, value)."""
        events = await asyncio.to_thread(self._standin_get, "meter_events")
        return [(str(i), str(c), int(v)) for i, c, v in events]

    def _standin_get(self, path: str) -> Any:
        import urllib.request  # noqa: PLC0415 - only the checker reads the stand-in's state

        with urllib.request.urlopen(f"{self.standin.url}/_standin/{path}", timeout=30) as answer:
            return json.loads(answer.read())


def environment_summary() -> str:
    return f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"


def _mount_small_disk(directory: Path) -> bool:
    """A tmpfs of SMALL_DISK_BYTES at `directory`; False (the disk-full schedule then says it
    cannot run) when not root or mounting fails."""
    directory.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)
