"""Workers benchmark: `serve --workers 2` against `--workers 1`, in the same run, as a ratio.

`python -m bench.workers` starts, on 127.0.0.1 only, one node with one worker and one with
two (each on its own data directory, as an operator would: `tenants create`, then `serve`),
and drives the billable score read (`--request score`) or rating writes to one tenant
(`--request rating`: two workers then write one tenant file) against each in turn,
alternating for `--rounds`, so both meet the same neighbours. Neither server is pinned:
the point is whether a second process uses the second core, which the load generator
shares. It prints requests per second, latency and the median ratio of two workers to one.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.loadgen import (
    RUNNERS,
    GeneratorName,
    Measurement,
    Target,
    choose_generator,
    wrk_version,
)
from bench.processes import stop
from bench.scenarios import RATING_BODY, RATINGS_PATH, SCORE_PATH
from bench.servers import (
    RATE_LIMIT_PER_MINUTE,
    SEED_ITEM,
    edge_node_executable,
    seed_ratings,
    server_environ,
    wait_listening,
)

STOP_GRACE_SECONDS = 15


def start_node(
    workdir: Path, workers: int, request: str = "score"
) -> tuple[subprocess.Popen[bytes], Target]:
    """A node serving with `workers` processes, and the request to drive against it."""
    environ = server_environ({})
    edge_node = [edge_node_executable(), "--data-dir", str(workdir / f"workers-{workers}")]
    create = ["tenants", "create", "--name", "bench", "--rate-limit", RATE_LIMIT_PER_MINUTE]
    created = subprocess.run(
        [*edge_node, *create], env=environ, capture_output=True, check=True, timeout=60
    )
    tenant = json.loads(created.stdout)
    log = workdir / f"workers-{workers}.log"
    with log.open("wb") as out:
        command = [*edge_node, "serve", "--port", "0", "--workers", str(workers)]
        process = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)
    port = wait_listening(process, log)
    headers = {"X-API-Key": tenant["api_key"]}
    seed_ratings(port, tenant["tenant_id"], headers)
    if request == "rating":
        path = RATINGS_PATH.format(tenant_id=tenant["tenant_id"])
        headers["Content-Type"] = "application/json"
        return process, Target("127.0.0.1", port, "POST", path, headers, RATING_BODY)
    path = SCORE_PATH.format(tenant_id=tenant["tenant_id"], item_id=SEED_ITEM)
    return process, Target("127.0.0.1", port, "GET", path, headers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds measured per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of 1 and 2")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--request", choices=("score", "rating"), default="score")
    args = parser.parse_args(argv)
    generator = choose_generator(args.loadgen, wrk_version())
    results = measure(
        generator, args.duration, args.warmup, args.connections, args.rounds, args.request
    )
    print(report(results, generator, args))
    failed = any(m.non_2xx or m.socket_errors for runs in results.values() for m in runs)
    return 1 if failed else 0


def measure(
    generator: GeneratorName,
    duration: int,
    warmup: int,
    connections: int,
    rounds: int,
    request: str = "score",
) -> dict[int, list[Measurement]]:
    """`request` against one worker and two, alternating for `rounds`."""
    run = RUNNERS[generator]
    results: dict[int, list[Measurement]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        nodes = {workers: start_node(Path(scratch), workers, request) for workers in (1, 2)}
        try:
            for round_ in range(rounds):
                for workers, (_, target) in nodes.items():
                    tag = f"w{workers}-r{round_}"
                    load = functools.partial(run, target, connections=connections, cpus=None)
                    load(seconds=warmup, tag=f"{tag}-warm")
                    results[workers].append(load(seconds=duration, tag=tag))
        finally:
            for process, _ in nodes.values():
                stop(process, grace=STOP_GRACE_SECONDS)
    return results


def report(results: dict[int, list[Measurement]], generator: str, args: argparse.Namespace) -> str:
    lines = [
        f"{'score read' if args.request == 'score' else 'rating write'},"
        f" {args.connections} connections, {args.duration} s x {args.rounds} rounds,"
        f" load generator {generator}",
        "",
        "| workers | req/s (median) | p50 ms | p99 ms | non-2xx | socket errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    medians = {}
    for workers, runs in results.items():
        medians[workers] = statistics.median(m.requests_per_second for m in runs)
        lines.append(
            f"| {workers} | {medians[workers]:.0f} |"
            f" {statistics.median(m.p50_ms for m in runs):.2f} |"
            f" {statistics.median(m.p99_ms for m in runs):.2f} |"
            f" {sum(m.non_2xx for m in runs)} | {sum(m.socket_errors for m in runs)} |"
        )
    ratios = [
        two.requests_per_second / one.requests_per_second
        for one, two in zip(*results.values(), strict=True)
    ]
    lines += [
        "",
        f"ratio --workers 2 / --workers 1: {statistics.median(ratios):.2f}"
        f" (per round: {', '.join(f'{r:.2f}' for r in ratios)})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
