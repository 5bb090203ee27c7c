"""Benchmark: what counting served requests (edge_node/usage/served.py) adds to recording usage.

Run from the repository root:

    python -m bench.served [--events 100000] [--tenants 100] [--repeat 3] [--dir PATH]

Three rows, measured in the same run (best of `--repeat` interleaved runs each): the
counter's `add` alone; `Meter.record` in batched durability without the counter (the
baseline: encode the usage event, append it to the queue); and `Meter.record` with the
counter, as the daemon runs it. The cost of counting is read as the ratio of the last two,
or, on a noisy machine, as `add` against the baseline. Batched durability keeps fsync
waits out of the figures; in strict durability each request also waits for a group commit,
which dwarfs both.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from edge_node.config import MeterConfig
from edge_node.queue import QueueSettings, open_queue
from edge_node.usage.meter import BILLING_CONSUMER, Meter
from edge_node.usage.operations import SCORE_READ
from edge_node.usage.served import ServedCounter


def bench_add(path: Path, tenants: list[str], events: int) -> float:
    counter = ServedCounter(path)
    now_ms = int(time.time() * 1000)
    start = time.perf_counter()
    for n in range(events):
        counter.add(tenants[n % len(tenants)], now_ms, 1)
    seconds = time.perf_counter() - start
    counter.close()
    return seconds


async def bench_record(directory: Path, tenants: list[str], events: int, counted: bool) -> float:
    queue = await open_queue(
        directory, consumers=(BILLING_CONSUMER,), settings=QueueSettings(max_bytes=1 << 30)
    )
    served = ServedCounter(directory.parent / f"{directory.name}.counts") if counted else None
    meter = Meter(queue, MeterConfig(durability="batched"), "bench-node", served)
    start = time.perf_counter()
    for n in range(events):
        await meter.record(tenants[n % len(tenants)], SCORE_READ.name, 200, "req")
        if n % 1000 == 999:
            await asyncio.sleep(0)  # let group commits run, as between requests
    seconds = time.perf_counter() - start
    await meter.close()
    return seconds


def measure(events: int, tenants_count: int, repeat: int, where: Path | None) -> dict[str, float]:
    """Seconds for `events` of each row: counter add, record without and with the counter."""
    tenants = [str(uuid.uuid4()) for _ in range(tenants_count)]
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        root = Path(scratch)
        add = min(bench_add(root / f"add{n}.counts", tenants, events) for n in range(3))
        runs: dict[bool, list[float]] = {False: [], True: []}
        for n in range(repeat):  # interleaved, best of each: the machine is noisy
            for with_counter in (False, True):
                directory = root / f"{'counted' if with_counter else 'baseline'}-{n}"
                runs[with_counter].append(
                    asyncio.run(bench_record(directory, tenants, events, with_counter))
                )
    return {"add": add, "baseline": min(runs[False]), "counted": min(runs[True])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures = measure(args.events, args.tenants, args.repeat, args.dir)
    add, baseline, counted = figures["add"], figures["baseline"], figures["counted"]
    per = 1e6 / args.events
    print(f"{args.events} events, {args.tenants} tenants")
    print(f"counter add alone          {add * per:6.2f} us/event")
    print(f"Meter.record, no counter   {baseline * per:6.2f} us/event  (baseline)")
    print(
        f"Meter.record, counted      {counted * per:6.2f} us/event  "
        f"({counted / baseline:.3f} x baseline, +{(counted - baseline) * per:.2f} us)"
    )


if __name__ == "__main__":
    main()
