"""Benchmark: durable queue appends per second under concurrency, against one fsync per append.

Run from the repository root:

    python -m bench.queue_append [--seconds 3] [--concurrency 1 64 512] [--dir PATH] [--uvloop]

Every append counted here has returned, i.e. its record was fsynced. The baseline row is
the same payload written with os.write + os.fsync per record, measured in the same run on
the same file system, so the group-commit rows read as a ratio to it. Use a directory on
the disk the daemon will use: on tmpfs an fsync costs nothing and the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_node.queue import QueueSettings, open_queue

PAYLOAD = b'{"tenant":"t_0042","route":"GET /v1/items/{id}/rating","units":1,' + b"x" * 84


@dataclass
class Row:
    label: str
    appends: int
    seconds: float
    fsyncs: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.appends / self.seconds


def measure_raw(directory: Path, seconds: float) -> Row:
    """One os.write + os.fsync per record: what durability costs without group commit."""
    fd = os.open(directory / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    latencies = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        while (now := time.perf_counter()) < deadline:
            os.write(fd, PAYLOAD)
            os.fsync(fd)
            latencies.append(time.perf_counter() - now)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    return Row("write+fsync per record", len(latencies), elapsed, len(latencies), latencies)


async def measure_queue(directory: Path, concurrency: int, seconds: float) -> Row:
    """`concurrency` tasks each awaiting durable appends in a loop for `seconds`."""
    fsyncs = 0

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        os.fsync(fd)

    settings = QueueSettings(segment_bytes=64 * 1024 * 1024, max_bytes=8 * 1024**3)
    queue = await open_queue(
        directory, consumers=("bench",), settings=settings, fsync=counting_fsync
    )
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def appender() -> None:
        while (now := time.perf_counter()) < deadline:
            await queue.append(PAYLOAD)
            latencies.append(time.perf_counter() - now)

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await queue.close()
    return Row(f"queue, {concurrency} concurrent", len(latencies), elapsed, fsyncs, latencies)


def percentile_us(latencies: list[float], fraction: float) -> float:
    ordered = sorted(latencies)
    return 1e6 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def print_table(rows: list[Row], baseline: float) -> None:
    print(
        f"{'mode':<26}{'appends/s':>12}{'x baseline':>12}{'recs/fsync':>12}"
        f"{'p50 us':>10}{'p99 us':>10}"
    )
    for row in rows:
        print(
            f"{row.label:<26}{row.rate:>12,.0f}{row.rate / baseline:>12.1f}"
            f"{row.appends / max(row.fsyncs, 1):>12.1f}"
            f"{percentile_us(row.latencies, 0.5):>10.0f}{percentile_us(row.latencies, 0.99):>10.0f}"
        )


async def run_all(root: Path, concurrencies: list[int], seconds: float) -> list[Row]:
    rows = []
    for concurrency in concurrencies:
        rows.append(await measure_queue(root / f"queue-{concurrency}", concurrency, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a real disk)")
    parser.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="queue-bench-") as scratch:
        root = Path(scratch)
        print(f"writing to {root}, {args.seconds:g} s per row, payload {len(PAYLOAD)} bytes")
        baseline = measure_raw(root, args.seconds)
        if args.uvloop:
            import uvloop  # noqa: PLC0415 - optional, only when asked for

            rows = uvloop.run(run_all(root, args.concurrency, args.seconds))
        else:
            rows = asyncio.run(run_all(root, args.concurrency, args.seconds))
        print_table([baseline, *rows], baseline.rate)
        median = statistics.median(row.rate for row in rows)
        print(f"median queue rate {median:,.0f} appends/s")


if __name__ == "__main__":
    main()
