"""Benchmark: a rate-limit decision in one process, and from buckets shared by workers.

Run from the repository root:

    python -m bench.ratelimit [--takes 200000] [--tenants 100] [--repeat 3]

Two rows, measured in the same run (best of `--repeat` interleaved runs each): the
process's own buckets (edge_node/admission/ratelimit.py, what `serve` uses: the baseline), and the
buckets file every worker of `serve --workers N` maps (edge_node/admission/shared_limits.py: a
record lock and unlock around each decision). Read the cost of sharing as the ratio, or as the
microseconds added to a request (a billable score read costs about 125 µs).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from edge_node.admission.ratelimit import RateLimiter
from edge_node.admission.shared_limits import SharedRateLimiter, create_buckets


def bench_takes(limiter: RateLimiter, tenants: list[str], takes: int) -> float:
    take = limiter.take
    start = time.perf_counter()
    for n in range(takes):
        take(tenants[n % len(tenants)], 1_000_000)
    return time.perf_counter() - start


def measure(takes: int, tenants_count: int, repeat: int) -> dict[str, float]:
    """Seconds for `takes` decisions: 'local' (one process's buckets) and 'shared'."""
    tenants = [str(uuid.uuid4()) for _ in range(tenants_count)]
    runs: dict[str, list[float]] = {"local": [], "shared": []}
    table = create_buckets()
    shared = SharedRateLimiter(table, 60)
    for _ in range(repeat):  # interleaved, best of each: the machine is noisy
        runs["local"].append(bench_takes(RateLimiter(60), tenants, takes))
        runs["shared"].append(bench_takes(shared, tenants, takes))
    shared.close()
    os.close(table)
    return {name: min(seconds) for name, seconds in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures = measure(args.takes, args.tenants, args.repeat)
    per = 1e6 / args.takes
    local, shared = figures["local"], figures["shared"]
    print(f"{args.takes} decisions over {args.tenants} tenants")
    print(f"one process's buckets      {local * per:6.2f} us/decision  (baseline)")
    print(
        f"buckets shared by workers  {shared * per:6.2f} us/decision  "
        f"({shared / local:.2f} x baseline, +{(shared - local) * per:.2f} us)"
    )


if __name__ == "__main__":
    main()
