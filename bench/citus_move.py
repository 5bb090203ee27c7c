"""Benchmark: how long a Citus shard move takes, idle and while edges sync under load.

Run from the repository root (Citus installed: `sh scripts/ensure-citus.sh`):

    python -m bench.citus_move [--tenants 6] [--rounds 2] [--write-interval 0.02]

It starts a throwaway Citus cluster, a coordinator and two workers (tests/citus.py, 4 shards
per table, fsync off), migrates a database on it and gives it `--tenants` tenants with a few
ratings each. Then, for each transfer mode (`block_writes`, and `force_logical`: logical
replication, what `auto`, the default, picks for tables with a primary key), `--rounds` times:
every shard group on one worker is moved to the other (`citus_move_shard_placement`), then
`citus_rebalance_start` in that mode spreads them again. Each move and each rebalance is
timed, first with nothing else running ("idle"), then "under load": edge A rates an item of
every tenant each `--write-interval` seconds while edges A and B run their sync workers (a
round every 50 ms). Afterwards both edges must hold exactly the central rows of every tenant,
one row per rating: a figure from a run that lost or doubled a rating is not printed.

On this 2-core machine the three servers, the two edges and the writer share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sync.backoff import Backoff
from sync.central.schema import migrate_dsns
from sync.postgres import Connection, connect
from tests.citus import CitusCluster, start_cluster
from tests.sync.support import Edge, central_rows, rows_hash

MODES = ("block_writes", "force_logical")
_ON_PORT = """
    SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
    JOIN pg_dist_node n USING (groupid)
    WHERE s.logicalrelid = 'tenants'::regclass AND n.nodeport = $1"""
_MOVE = """
    SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3,
                                      shard_transfer_mode => $4::citus.shard_transfer_mode)"""
_REBALANCE = "SELECT citus_rebalance_start(shard_transfer_mode => $1::citus.shard_transfer_mode)"


async def timed(conn: Connection, query: str, *args: object) -> float:
    started = time.perf_counter()
    await conn.execute(query, *args)
    return time.perf_counter() - started


async def move_and_rebalance(
    conn: Connection, cluster: CitusCluster, mode: str, rounds: int
) -> tuple[list[float], list[float]]:
    """(seconds of each shard group's move, seconds of each rebalance) in `mode`."""
    moves: list[float] = []
    rebalances: list[float] = []
    for n in range(rounds):
        source, target = cluster.workers[n % 2], cluster.workers[1 - n % 2]
        for (shard,) in await conn.fetch(_ON_PORT, source.port):
            moves.append(await timed(conn, _MOVE, shard, source.port, target.port, mode))
        started = time.perf_counter()
        await conn.execute(_REBALANCE, mode)
        await conn.execute("SELECT citus_rebalance_wait()")
        rebalances.append(time.perf_counter() - started)
    return moves, rebalances


async def write_while(edge: Edge, tenants: list[str], every: float, stop: asyncio.Event) -> int:
    """Rate (and now and then rewrite) an item of every tenant until `stop`; how many rounds."""
    n = 0
    while not stop.is_set():
        for t in tenants:
            edge.rate(t, f"u{n % 50}", f"item{n % 9}", 1 + n % 5, f"#{n}")
        n += 1
        await asyncio.sleep(every)
    return n


async def converge(edges: list[Edge], conn: Connection, tenants: list[str]) -> None:
    """Wait until every edge holds exactly the central rows, one per rating; fail after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        central = {t: await central_rows(conn, t) for t in tenants}
        if all(rows_hash(e.rows(t)) == rows_hash(central[t]) for e in edges for t in tenants):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the edges never converged: a rating was lost or doubled")
        await asyncio.sleep(0.2)
    for e in edges:
        for t in tenants:
            rows = e.rows(t)
            if len({(r[2], r[3]) for r in rows}) != len(rows):
                raise SystemExit(f"{e.node_id} holds a rating of {t} twice")


async def measure(
    cluster: CitusCluster, root: Path, tenants: int, rounds: int, every: float
) -> dict[str, tuple[list[float], list[float]]]:
    dsn = cluster.dsn(cluster.create_database())
    await migrate_dsns([dsn])
    conn = await connect(dsn)
    a, b = Edge.open(root / "edge-a", "edge-a"), Edge.open(root / "edge-b", "edge-b")
    figures: dict[str, tuple[list[float], list[float]]] = {}
    try:
        ids = [a.registry.create_tenant(f"bench{i}")[0].tenant_id for i in range(tenants)]
        for t in ids:
            for n in range(20):
                a.rate(t, f"seed{n}", "item0", 1 + n % 5)
        await a.sync(dsn)
        for mode in MODES:
            figures[f"idle, {mode}"] = await move_and_rebalance(conn, cluster, mode, rounds)
        workers = [e.worker([dsn], backoff=Backoff(0.05, 0.3)) for e in (a, b)]
        for worker in workers:
            worker.start()
        stop = asyncio.Event()
        writer = asyncio.create_task(write_while(a, ids, every, stop))
        try:
            await asyncio.sleep(2)  # edges and writer under way
            for mode in MODES:
                figures[f"under load, {mode}"] = await move_and_rebalance(
                    conn, cluster, mode, rounds
                )
        finally:
            stop.set()
            written = await writer
            for worker in workers:
                await worker.stop()
        await a.sync(dsn)
        await b.sync(dsn)
        await converge([a, b], conn, ids)
        print(f"{written * tenants} ratings written by edge A during the moves under load")
    finally:
        await conn.close()
        a.close()
        b.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-interval", type=float, default=0.02)
    args = parser.parse_args()
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(
                measure(cluster, Path(tmp), args.tenants, args.rounds, args.write_interval)
            )
    finally:
        cluster.stop()
    print("seconds per shard group move (median / max, count) and per rebalance (median):")
    for name, (moves, rebalances) in figures.items():
        print(
            f"{name:28}{statistics.median(moves):7.2f} /{max(moves):6.2f} ({len(moves)})"
            f"{statistics.median(rebalances):10.2f}"
        )


if __name__ == "__main__":
    main()
