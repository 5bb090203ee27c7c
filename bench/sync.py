"""Benchmark: sync with the central PostgreSQL, an outbox backlog and a healing partition.

Run from the repository root:

    python -m bench.sync upload [--rows 100000] [--batch-size 1000] [--dsn URL]
    python -m bench.sync converge [--writes 10000] [--nodes 3] [--interval 1.0] [--dsn URL]
    python -m bench.sync stall [--tenants 600] [--busy-tenants 5] [--rows 1000] [--dsn URL]

`upload`: one tenant with `--rows` local ratings waiting in its outbox; times the upload of
the whole backlog (SQLite read, one unnest upsert per batch, acknowledgement) and, separately,
the download of the same rows by a second edge node.
`converge`: `--nodes` edge nodes each write `--writes` ratings of one tenant while no worker
runs (the partition; a third of the keys written by every node, so they conflict), then
every node starts its sync worker at once; times until every node and PostgreSQL hold the
same rows.
`stall`: the event loop's worst stall during sync rounds of a node holding `--tenants`
tenants (more than the 256 tenant files kept open), measured by a task that sleeps 1 ms over
and over and records how late it wakes: an idle round (nothing to move), an upload round
(`--busy-tenants` tenants with `--rows` new local ratings each) and a download round (another
node receiving them).
Without --dsn a throwaway PostgreSQL is started (tests/postgres.py) with fsync off, so these
numbers leave out the server's disk; each run uses a fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from edge_node.config import CentralConfig
from edge_node.node_database import open_node_database
from edge_node.rating.model import RatingInput
from edge_node.rating.store import TenantStores
from edge_node.tenants.registry import TenantRegistry
from sync.central.schema import migrate_dsns
from sync.postgres import connect
from sync.replication.positions import database_identity
from sync.replication.registry import registry_tenants
from sync.replication.round_values import EdgeStorage
from sync.replication.rounds import ShardRound
from sync.replication.set_aside import SetAsideLog
from sync.worker import SyncWorker


class Node:
    def __init__(self, root: Path, node_id: str) -> None:
        self.node_id = node_id
        self.data_dir = root / node_id
        self.node_database = open_node_database(self.data_dir)
        self.registry = TenantRegistry(self.node_database)
        self.stores = TenantStores(self.data_dir / "tenants", node_id=node_id)

    def close(self) -> None:
        self.stores.close()
        self.node_database.close()

    def worker(self, dsn: str, interval: float, batch_size: int) -> SyncWorker:
        central = CentralConfig(dsns=(dsn,), sync_interval_seconds=interval, batch_size=batch_size)
        edge = EdgeStorage(self.node_database, self.stores)
        return SyncWorker(central, edge, node_id=self.node_id, data_dir=self.data_dir)

    def rows_digest(self, tenant_id: str) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.stores.path(tenant_id))) as conn:
            return conn.execute(
                "SELECT id, score, comment, updated_at, origin_node, deleted FROM ratings"
                " ORDER BY id"
            ).fetchall()


def write(node: Node, tenant_id: str, count: int, *, prefix: str = "u") -> float:
    store = node.stores.get(tenant_id)
    started = time.perf_counter()
    for i in range(count):
        store.upsert(RatingInput(f"{prefix}{i}", f"item{i % 500}", 1 + i % 5, None))
    return time.perf_counter() - started


async def bench_upload(dsn: str, root: Path, rows: int, batch_size: int) -> dict[str, float]:
    a, b = Node(root, "edge-a"), Node(root, "edge-b")
    try:
        tenant, _ = a.registry.create_tenant("bench")
        t = tenant.tenant_id
        seconds = write(a, t, rows)
        print(f"local writes: {rows} in {seconds:.2f} s")
        conn = await connect(dsn)
        try:
            edge_a = EdgeStorage(a.node_database, a.stores)
            round_ = ShardRound(conn, 0, 1, edge_a, batch_size, SetAsideLog(root / "x"))
            await round_.upload(registry_tenants(edge_a))
            started = time.perf_counter()
            await round_.ratings(await round_.open_downloads(await round_.database())).upload([t])
            seconds = time.perf_counter() - started
            figures = {"rows": rows, "upload_rows_per_second": rows / seconds}
            assert await conn.fetchval("SELECT count(*) FROM ratings") == rows
            print(
                f"upload: {rows} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s"
                f" (batch {batch_size})"
            )
            edge_b = EdgeStorage(b.node_database, b.stores)
            await ShardRound(conn, 0, 1, edge_b, batch_size, SetAsideLog(root / "x")).download(
                registry_tenants(edge_b), await database_identity(conn)
            )  # the tenant, to hold its rows
            started = time.perf_counter()
            down = ShardRound(conn, 0, 1, edge_b, batch_size, SetAsideLog(root / "x"))
            database = await down.database()
            await down.ratings(await down.open_downloads(database)).download([t], database)
            seconds = time.perf_counter() - started
            print(
                f"download: {down.report.downloaded} rows in {seconds:.2f} s"
                f" = {down.report.downloaded / seconds:,.0f} rows/s"
            )
            figures["download_rows_per_second"] = down.report.downloaded / seconds
        finally:
            await conn.close()
    finally:
        a.close()
        b.close()
    return figures


async def bench_converge(
    dsn: str, root: Path, writes: int, node_count: int, interval: float, batch_size: int
) -> dict[str, float]:
    nodes = [Node(root, f"edge-{i}") for i in range(node_count)]
    try:
        tenant, _ = nodes[0].registry.create_tenant("bench")
        t = tenant.tenant_id
        first = nodes[0].worker(dsn, interval, batch_size)
        await first.run_once()
        await first.stop()
        for node in nodes[1:]:
            worker = node.worker(dsn, interval, batch_size)
            await worker.run_once()
            await worker.stop()
        for n, node in enumerate(nodes):
            shared = writes // 3
            write(node, t, shared, prefix="shared")  # the same keys on every node: conflicts
            write(node, t, writes - shared, prefix=f"n{n}-")
        print(f"{node_count} nodes x {writes} pending writes; sync interval {interval} s")
        workers = [node.worker(dsn, interval, batch_size) for node in nodes]
        conn = await connect(dsn)
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        try:
            while True:
                digests = [node.rows_digest(t) for node in nodes]
                central = await conn.fetchval("SELECT count(*) FROM ratings")
                if all(d == digests[0] for d in digests) and central == len(digests[0]):
                    break
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            for worker in workers:
                await worker.stop()
            await conn.close()
        print(f"converged: {len(digests[0])} rows on every node and centrally in {seconds:.2f} s")
    finally:
        for node in nodes:
            node.close()
    return {"nodes": node_count, "rows": len(digests[0]), "seconds": seconds}


class StallMonitor:
    """How long the loop was blocked while it runs: the worst lateness of a 1 ms sleep (wall
    clock, which includes time the process was not scheduled on a busy machine), and the
    most CPU time the loop's thread spent between two of its wake-ups (the work done in one
    loop turn, whatever the machine's load)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - started - 0.001)
            self.worst_cpu = max(self.worst_cpu, time.thread_time() - cpu)

    async def measure(self, work: Coroutine[Any, Any, object]) -> tuple[float, float, float]:
        """Run `work`; its duration, the worst stall and the most CPU in one loop turn, in s."""
        self.worst = self.worst_cpu = 0.0
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        try:
            await work
        finally:
            seconds = time.perf_counter() - started
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return seconds, self.worst, self.worst_cpu


async def bench_stall(
    dsn: str, root: Path, tenants: int, busy: int, rows: int
) -> dict[str, tuple[float, float, float]]:
    """Per round (idle, upload, download): its seconds, worst stall and most CPU in one turn."""
    a, b = Node(root, "edge-a"), Node(root, "edge-b")
    monitor = StallMonitor()
    rounds: dict[str, tuple[float, float, float]] = {}
    try:
        ids = [a.registry.create_tenant(f"t{i}")[0].tenant_id for i in range(tenants)]
        for t in ids:
            write(a, t, 1)
        up, down = a.worker(dsn, 1.0, 1000), b.worker(dsn, 1.0, 1000)
        await up.run_once()
        await down.run_once()  # b now holds every tenant and its first rating
        print(f"{tenants} tenants; {busy} of them get {rows} new ratings each")

        def report(name: str, figures: tuple[float, float, float]) -> None:
            rounds[name] = figures
            seconds, stall, cpu = figures
            print(
                f"{name}: round {seconds * 1e3:.0f} ms, worst loop stall {stall * 1e3:.1f} ms,"
                f" most CPU in one loop turn {cpu * 1e3:.1f} ms"
            )

        report("idle round", await monitor.measure(down.run_once()))
        for t in ids[:busy]:
            write(a, t, rows, prefix="more")
        report("upload round", await monitor.measure(up.run_once()))
        report("download round", await monitor.measure(down.run_once()))
        await up.stop()
        await down.stop()
    finally:
        a.close()
        b.close()
    return rounds


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    from tests.postgres import start_server  # noqa: PLC0415 - only without --dsn

    server = start_server()
    try:
        yield server.dsn(server.create_database())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("upload", "converge", "stall"))
    parser.add_argument("--tenants", type=int, default=600)
    parser.add_argument("--busy-tenants", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--dsn", help="an empty database to use (default: a throwaway server)")
    args = parser.parse_args()
    with database(args.dsn) as dsn, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(migrate_dsns([dsn]))
        if args.scenario == "stall":
            rows = 1000 if args.rows == 100_000 else args.rows
            asyncio.run(bench_stall(dsn, Path(tmp), args.tenants, args.busy_tenants, rows))
        elif args.scenario == "upload":
            asyncio.run(bench_upload(dsn, Path(tmp), args.rows, args.batch_size))
        else:
            asyncio.run(
                bench_converge(
                    dsn, Path(tmp), args.writes, args.nodes, args.interval, args.batch_size
                )
            )


if __name__ == "__main__":
    main()
