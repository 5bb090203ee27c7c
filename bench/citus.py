"""Benchmark: upload and download rows/s on a three-node Citus cluster against one PostgreSQL.

Run from the repository root (Citus installed: `sh scripts/ensure-citus.sh`):

    python -m bench.citus [--rows 40000] [--tenants 8] [--batch-size 1000] [--repeat 2]

In one run it starts a throwaway PostgreSQL (tests/postgres.py) and a throwaway Citus cluster,
a coordinator and two workers (tests/citus.py, 4 shards per table), all with fsync off, on
this machine: the cluster's three servers share its cores with each other and with the edge.
On each, in turn and `--repeat` times: edge A holds `--rows` local ratings spread over
`--tenants` tenants and uploads them (the sync round's ratings upload, `--batch-size` rows per
statement); edge B then downloads them all (the shard-wide download, applied to its tenant
files). Each figure is rows/s; the ratio is Citus over plain PostgreSQL in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.sync import Node, write
from sync.central.schema import migrate_dsns
from sync.postgres import connect
from sync.replication.registry import registry_tenants
from sync.replication.round_values import EdgeStorage
from sync.replication.rounds import ShardRound
from sync.replication.set_aside import SetAsideLog
from tests.citus import start_cluster
from tests.postgres import start_server


async def transfer(
    dsn: str, root: Path, rows: int, tenants: int, batch: int
) -> tuple[float, float]:
    """(upload rows/s, download rows/s) of `rows` ratings over `tenants` tenants."""
    await migrate_dsns([dsn])
    a, b = Node(root, "edge-a"), Node(root, "edge-b")
    conn = await connect(dsn)
    try:
        ids = [a.registry.create_tenant(f"bench{i}")[0].tenant_id for i in range(tenants)]
        for t in ids:
            write(a, t, rows // tenants, prefix=f"{t[:8]}-")
        edge_a, edge_b = (
            EdgeStorage(a.node_database, a.stores),
            EdgeStorage(b.node_database, b.stores),
        )
        up = ShardRound(conn, 0, 1, edge_a, batch, SetAsideLog(root / "x"))
        database = await up.database()
        await up.replicate(registry_tenants(edge_a), database)
        started = time.perf_counter()
        await up.ratings(await up.open_downloads(database)).upload(ids)
        upload = time.perf_counter() - started
        sent = await conn.fetchval("SELECT count(*) FROM ratings")
        down = ShardRound(conn, 0, 1, edge_b, batch, SetAsideLog(root / "x"))
        await down.replicate(registry_tenants(edge_b), database)  # the tenants, to hold rows
        started = time.perf_counter()
        await down.ratings(await down.open_downloads(database)).download(ids, database)
        download = time.perf_counter() - started
        assert down.report.downloaded >= sent, (down.report.downloaded, sent)
        return sent / upload, sent / download
    finally:
        await conn.close()
        a.close()
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    plain, cluster = start_server(), start_cluster()
    try:
        figures: dict[str, list[tuple[float, float]]] = {"postgresql": [], "citus": []}
        for _ in range(args.repeat):
            for kind, runs in figures.items():
                if kind == "citus":
                    dsn = cluster.dsn(cluster.create_database())
                else:
                    dsn = plain.dsn(plain.create_database())
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(
                        asyncio.run(
                            transfer(dsn, Path(tmp), args.rows, args.tenants, args.batch_size)
                        )
                    )
        medians = {
            kind: (statistics.median(u for u, _ in runs), statistics.median(d for _, d in runs))
            for kind, runs in figures.items()
        }
        print(f"{args.rows} ratings over {args.tenants} tenants, batch {args.batch_size},")
        print(f"median of {args.repeat} runs each, rows/s:")
        print(f"{'':12}{'upload':>12}{'download':>12}")
        for kind, (up, down) in medians.items():
            print(f"{kind:12}{up:12,.0f}{down:12,.0f}")
        (pu, pd), (cu, cd) = medians["postgresql"], medians["citus"]
        print(f"{'citus/plain':12}{cu / pu:12.2f}{cd / pd:12.2f}")
    finally:
        plain.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
