"""Benchmark: worker processes writing one tenant file at once (`serve --workers N`, one tenant).

Run from the repository root:

    python -m bench.shared_writes [--processes 2] [--seconds 8] [--batch 20] [--against REV]

Each process serves nothing but its event loop: it writes ratings to the same tenant file
through the daemon's TenantStores (group commit, background checkpoints), `--batch` writes a
loop iteration, as fast as they commit, while a task that sleeps 5 ms at a time measures how
late the loop wakes it: the longest stall of the loop, which every request of a worker would
wait out. The baseline is one process alone, measured in the same run just before. With
`--against`, a worktree of that revision is measured the same way, alternating with this
tree, so that the two can be read side by side on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.request_path import ROOT, revision_tree

TICK_SECONDS = 0.005


async def write_for(directory: Path, tenant_id: str, seconds: float, name: str, batch: int) -> Any:
    """Write batches of ratings to the tenant's file for `seconds`; the figures of this process."""
    from edge_node.rating.model import parse_rating  # noqa: PLC0415
    from edge_node.rating.store import TenantStores  # noqa: PLC0415

    stores = TenantStores(directory, node_id=name)
    store = stores.get(tenant_id)
    checkpoints = asyncio.ensure_future(stores.run_checkpoints(1.0))
    stop = time.monotonic() + seconds
    stall = 0.0

    async def watch() -> None:
        nonlocal stall
        while time.monotonic() < stop:
            started = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            stall = max(stall, time.monotonic() - started - TICK_SECONDS)

    watching = asyncio.ensure_future(watch())
    written, batches = 0, []
    try:
        while time.monotonic() < stop:
            started = time.monotonic()
            writes = []
            for _ in range(batch):
                rating = parse_rating(
                    {"user_id": f"{name}-{written}", "item_id": "item", "score": 3, "comment": "c"}
                )
                written += 1
                writes.append(store.batched(functools.partial(store.upsert, rating)))
            await asyncio.gather(*writes)
            batches.append(time.monotonic() - started)
            await asyncio.sleep(0)
        await watching
    finally:
        checkpoints.cancel()
        stores.close()
    batches.sort()
    return {
        "writes_per_second": written / seconds,
        "slowest_batch_ms": batches[-1] * 1000,
        "p99_batch_ms": batches[int(len(batches) * 0.99)] * 1000,
        "longest_stall_ms": stall * 1000,
    }


def child(directory: str, tenant_id: str, seconds: str, name: str, batch: str) -> None:
    import uvloop  # noqa: PLC0415

    figures = uvloop.run(write_for(Path(directory), tenant_id, float(seconds), name, int(batch)))
    print(json.dumps(figures))


def make_file(directory: str, tenant_id: str) -> None:
    """The tenant's file, made once before the writers start."""
    from edge_node.rating.store import TenantStores  # noqa: PLC0415

    stores = TenantStores(Path(directory), node_id="setup")
    stores.get(tenant_id)
    stores.close()


def _calling(tree: Path, function: str, *args: str) -> list[str]:
    """The command running this module's `function` with `tree`'s code."""
    program = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        f" from bench.shared_writes import {function}; {function}(*sys.argv[2:])"
    )
    return [sys.executable, "-c", program, str(tree), *args]


def run(tree: Path, processes: int, seconds: float, batch: int) -> list[dict[str, float]]:
    """`processes` processes of `tree`'s code writing one new tenant file together."""
    with tempfile.TemporaryDirectory(prefix="edge-node-shared-writes-") as scratch:
        directory, tenant_id = str(Path(scratch) / "tenants"), str(uuid.uuid4())
        subprocess.run(_calling(tree, "make_file", directory, tenant_id), check=True)
        children = [
            subprocess.Popen(
                _calling(tree, "child", directory, tenant_id, str(seconds), f"w{n}", str(batch)),
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        outputs = [process.communicate()[0] for process in children]
        if any(process.returncode for process in children):
            raise RuntimeError(f"a writer of {tree} failed")
        return [json.loads(output.splitlines()[-1]) for output in outputs]


def summary(label: str, alone: dict[str, float], together: list[dict[str, float]]) -> str:
    combined = sum(figures["writes_per_second"] for figures in together)
    return (
        f"| {label} | {alone['writes_per_second']:,.0f} | {combined:,.0f}"
        f" ({combined / alone['writes_per_second']:.2f}x) | {alone['longest_stall_ms']:.1f}"
        f" | {max(f['longest_stall_ms'] for f in together):.1f}"
        f" | {alone['slowest_batch_ms']:.1f}"
        f" | {max(f['slowest_batch_ms'] for f in together):.1f}"
        f" | {max(f['p99_batch_ms'] for f in together):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=20, help="writes a loop iteration")
    parser.add_argument("--against", help="a git revision measured in the same run")
    args = parser.parse_args()
    n = args.processes
    print(
        f"| code | writes/s, 1 process | writes/s, {n} processes (ratio) | longest stall ms,"
        f" 1 | longest stall ms, {n} | slowest batch ms, 1 | slowest batch ms, {n}"
        f" | p99 batch ms, {n} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with revision_tree(args.against, ("shared_writes.py", "request_path.py")) as other:
        trees = {"this": ROOT, **({args.against: other} if args.against and other else {})}
        for label, tree in trees.items():
            alone = run(tree, 1, args.seconds, args.batch)[0]
            together = run(tree, n, args.seconds, args.batch)
            print(summary(label, alone, together), flush=True)


if __name__ == "__main__":
    main()
