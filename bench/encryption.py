"""The cost of comment encryption: POST and GET .../ratings, sealed against plain, one run.

`python -m bench.encryption` starts two servers of the real application
(`bench.comment_server`): one sealing comments as shipped, one storing them in plain text,
pinned to the same CPU with the load generator on the others, each with its own data
directory and defaults otherwise (strict metering included). It seeds each with a full page
of commented ratings, then measures, round after round and alternating the two modes:

    post-plain / post-sealed   POST .../ratings with a 120-character comment (half create,
                               half update)
    get-plain / get-sealed     GET .../ratings?item_id=...: a page of 50 ratings, each
                               comment opened (50 AES-GCM decryptions per request)

and prints `sealed / plain` as requests/s and CPU µs per request ratios (the issue aims at a
cost of 5% or less, i.e. a ratio of 0.95 or more). Figures: docs/benchmarks.md.

On a busy machine the HTTP ratios swing by tens of percent between rounds, so the run also
times the store calls themselves, in this process, interleaved, best of many repetitions
(noise only ever adds time): the µs that sealing adds to one upsert and to one 50-row page,
cold (every comment decrypted) and warm (comments opened before), which read against the
HTTP request's CPU µs give the cost share however busy the machine is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.loadgen import Measurement, choose_generator, wrk_version
from bench.measure import Settings, measure
from bench.processes import spawn_pinned, split_cpus, stop
from bench.scenarios import RATINGS_PATH, Scenario
from bench.servers import Server, server_environ, wait_listening
from bench.summary import machine, markdown, problems, result_row
from edge_node.rating.model import RatingInput
from edge_node.rating.store import TenantStores

COMMENT = "A well-paced story with characters that stay with you; the ending felt earned. " * 2
COMMENT = COMMENT[:120]
POST_BODY = (
    '{"user_id":"bench-{stream}-{pair}","item_id":"item-{slot}","score":{score},'
    f'"comment":"{COMMENT}"}}'
)
PAGE_ITEM = "bench-page"
PAGE_SIZE = 50
LIST_PATH = RATINGS_PATH + f"?item_id={PAGE_ITEM}&limit={PAGE_SIZE}"
MODES = ("plain", "sealed")

SCENARIOS = (
    Scenario(
        "post-plain", "daemon", "POST", RATINGS_PATH, body=POST_BODY, env={"comments": "plain"}
    ),
    Scenario(
        "post-sealed",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=POST_BODY,
        env={"comments": "sealed"},
        baseline="post-plain",
        target=0.95,
    ),
    Scenario("get-plain", "daemon", "GET", LIST_PATH, env={"comments": "plain"}),
    Scenario(
        "get-sealed",
        "daemon",
        "GET",
        LIST_PATH,
        env={"comments": "sealed"},
        baseline="get-plain",
        target=0.95,
    ),
)


def start(mode: str, workdir: Path, cpus: set[int] | None) -> Server:
    log, credentials = workdir / f"{mode}.log", workdir / f"{mode}.json"
    command = [
        sys.executable,
        "-m",
        "bench.comment_server",
        "--data-dir",
        str(workdir / mode),
        "--mode",
        mode,
        "--credentials",
        str(credentials),
    ]
    with log.open("wb") as out:
        process = spawn_pinned(
            command, cpus, env=server_environ({}), stdout=out, stderr=subprocess.STDOUT
        )
    port = wait_listening(process, log)
    created = json.loads(credentials.read_text())
    headers = {"X-API-Key": created["api_key"]}
    seed_page(port, created["tenant_id"], headers)
    values = {"tenant_id": created["tenant_id"], "item_id": PAGE_ITEM}
    return Server(process, port, log, cpus, values, headers)


def seed_page(port: int, tenant_id: str, headers: Mapping[str, str]) -> None:
    """A full page of commented ratings on the item the GET scenarios list."""
    url = f"http://127.0.0.1:{port}{RATINGS_PATH.format(tenant_id=tenant_id)}"
    for index in range(PAGE_SIZE):
        body = {"user_id": f"seed-{index}", "item_id": PAGE_ITEM, "score": 4, "comment": COMMENT}
        data, kind = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data, {**headers, **kind}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 201), response.status


def store_costs(repetitions: int = 300, calls: int = 10) -> dict[str, float]:
    """Best-of-`repetitions` µs per call of the tenant store, plain and sealed, interleaved."""
    from bench.comment_server import PlainKeyring  # noqa: PLC0415

    tenant = "0c0ffee0-0000-4000-8000-000000000000"
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edge-node-bench-store-") as workdir:
        root = Path(workdir)
        opened = {
            mode: TenantStores(
                root / mode / "tenants",
                node_id="bench",
                keyring=PlainKeyring(root / mode / "keys") if mode == "plain" else None,
            )
            for mode in MODES
        }
        try:
            timed = {mode: _store_calls(stores, tenant) for mode, stores in opened.items()}
            for _ in range(repetitions):
                for mode, named in timed.items():
                    for name, call in named.items():
                        started = time.perf_counter()
                        for _ in range(calls):
                            call()
                        took = (time.perf_counter() - started) / calls * 1e6
                        best[f"{name}-{mode}"] = min(best.get(f"{name}-{mode}", took), took)
        finally:
            for stores in opened.values():
                stores.close()
    return best


def _store_calls(stores: TenantStores, tenant: str) -> dict[str, Callable[[], object]]:
    """A full page of commented ratings, and the calls timed on it."""
    store = stores.get(tenant)
    for index in range(PAGE_SIZE):
        store.upsert(RatingInput(f"seed-{index}", PAGE_ITEM, 4, COMMENT))
    rewrite = RatingInput("writer", "item-w", 3, COMMENT)

    def page_cold() -> object:
        stores.keyring.forget()  # every comment decrypted again
        return store.page(item_id=PAGE_ITEM, limit=PAGE_SIZE)

    return {
        "upsert": lambda: store.upsert(rewrite),
        "page-cold": page_cold,
        "page-warm": lambda: store.page(item_id=PAGE_ITEM, limit=PAGE_SIZE),
    }


def cost_lines(costs: Mapping[str, float], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The store-level costs, and their share of the HTTP request's CPU time (plain mode)."""
    cpu = {row["scenario"]: row["cpu_us_per_request"] for row in rows}
    lines = ["", "| store call | plain µs | sealed µs | added µs | share of the request's CPU |"]
    lines.append("|---|---:|---:|---:|---:|")
    for call, request in (
        ("upsert", "post-plain"),
        ("page-cold", "get-plain"),
        ("page-warm", "get-plain"),
    ):
        plain, sealed = costs[f"{call}-plain"], costs[f"{call}-sealed"]
        share = (sealed - plain) / cpu[request] if cpu.get(request) else float("nan")
        lines.append(
            f"| {call} | {plain:.1f} | {sealed:.1f} | {sealed - plain:.1f} | {share:.1%} |"
        )
    return lines


def run(settings: Settings) -> dict[str, list[Measurement]]:
    server_cpus, loadgen_cpus = split_cpus()
    measured: dict[str, list[Measurement]] = {s.name: [] for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="edge-node-bench-enc-") as workdir:
        servers: dict[str, Server] = {}
        try:
            for mode in MODES:
                servers[mode] = start(mode, Path(workdir), server_cpus)
            for round_no, scenario in itertools.product(range(settings.rounds), SCENARIOS):
                print(f"bench: {scenario.name}, round {round_no + 1}", file=sys.stderr)
                server = servers[scenario.env["comments"]]
                measured[scenario.name].append(measure(scenario, server, settings, loadgen_cpus))
        finally:
            for server in servers.values():
                stop(server.process, grace=15)
    return measured


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.encryption", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds measured per scenario")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per scenario")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.rounds) < 1 or args.warmup < 0:
        parser.error("--duration, --connections and --rounds must be at least 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = wrk_version()
    generator = choose_generator(args.loadgen, wrk)
    settings = Settings(args.duration, args.warmup, args.connections, generator, args.rounds)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    measured = run(settings)
    rows = [result_row(s, measured[s.name], measured.get(s.baseline or "", [])) for s in SCENARIOS]
    print(markdown(rows, machine(settings, wrk), settings))
    print("\n".join(cost_lines(store_costs(), rows)))
    print(f"\n{time.monotonic() - started:.0f} s in all; settings {asdict(settings)}")
    for problem in problems(rows):
        print(f"bench: ERROR {problem}", file=sys.stderr)
    return 1 if problems(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
