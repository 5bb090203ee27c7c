"""HTTP benchmark: the daemon's score read and rating write, as ratios of a minimal aiohttp app.

`python -m bench.http` (`make bench`) starts, on 127.0.0.1 only, the baseline app
(`bench.minimal_app`) and the real daemon as a user would (`edge-node tenants create`, then
`edge-node serve`), pins the servers to one CPU and the load generator to the others, warms
each scenario up, measures it, prints a Markdown table and writes the same as JSON under
bench/results/. Machines are noisy, so each figure is read against a baseline measured in
the same run. docs/benchmarks.md says how to read it.

A scenario is data. To measure the daemon under other settings, add one to SCENARIOS with
an `env`: each distinct environment starts its own daemon, e.g.

    Scenario("post-rating-meter-off", "daemon", "POST", RATINGS_PATH, body=RATING_BODY,
             env={"EDGE_NODE_METER_ENABLED": "false"}, baseline="baseline-post", target=0.35)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from bench.loadgen import (
    RUNNERS,
    GeneratorName,
    Measurement,
    Target,
    check_template,
    choose_generator,
    wrk_version,
)
from bench.processes import cpu_seconds, spawn_pinned, split_cpus, stop

SCORE_PATH = "/v1/tenants/{tenant_id}/items/{item_id}/score"
RATINGS_PATH = "/v1/tenants/{tenant_id}/ratings"
LIST_PATH = RATINGS_PATH + "?item_id={item_id}&limit=50"
SEED_RATINGS = 60  # on SEED_ITEM, with comments: a list page is full
# Each stream's requests come in pairs on one (user, item): half create a rating, half update it.
RATING_BODY = '{"user_id":"bench-{stream}-{pair}","item_id":"item-{slot}","score":{score}}'
SEED_ITEM = "bench-item"
RATE_LIMIT_PER_MINUTE = "100000000"  # far above anything measured: the bucket never refuses
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT_SECONDS = 30.0
NOISY_SHARE = 0.10  # other processes using this much of the server's CPU make a run noise
SATURATED_SHARE = 0.90  # a baseline using less of its CPU was not the bottleneck


@dataclass(frozen=True)
class Scenario:
    """One measured kind of request: what is sent, to which server, started with what env."""

    name: str
    server: Literal["baseline", "daemon"]
    method: str
    path: str  # {tenant_id} and {item_id} are filled in from the server
    body: str | None = None  # a bench.loadgen body template
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of its server
    baseline: str | None = None  # the scenario whose requests/s this one is divided by
    target: float | None = None  # the least ratio the issue accepts

    @property
    def server_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.server, tuple(sorted(self.env.items()))


METER_OFF = {"EDGE_NODE_METER_ENABLED": "false"}
BATCHED = {"EDGE_NODE_METER_DURABILITY": "batched"}
METRICS_OFF = {"EDGE_NODE_METRICS_ENABLED": "false"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline-get", "baseline", "GET", SCORE_PATH),
    Scenario("get-score", "daemon", "GET", SCORE_PATH, baseline="baseline-get", target=0.50),
    Scenario("baseline-post", "baseline", "POST", RATINGS_PATH, body=RATING_BODY),
    Scenario("baseline-list", "baseline", "GET", LIST_PATH),
    Scenario("list-ratings", "daemon", "GET", LIST_PATH, baseline="baseline-list"),
    Scenario(
        "post-rating",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        baseline="baseline-post",
        target=0.35,
    ),
    # Metering's cost (issue: strict may cost at most 15% against metering off).
    Scenario(
        "get-score-meter-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env=METER_OFF,
        baseline="baseline-get",
        target=0.50,
    ),
    Scenario(
        "post-rating-meter-off",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        env=METER_OFF,
        baseline="baseline-post",
        target=0.35,
    ),
    Scenario(
        "post-rating-batched",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        env=BATCHED,
        baseline="post-rating-meter-off",
        target=0.85,
    ),
    Scenario(
        "post-rating-strict",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        baseline="post-rating-meter-off",
        target=0.85,
    ),
    # The abuse guard's cost on the request path (client IP, block lookup, two spike
    # counters): the default daemon against the same with abuse.enabled off.
    Scenario(
        "get-score-abuse-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env={"EDGE_NODE_ABUSE_ENABLED": "false"},
        baseline="baseline-get",
    ),
    Scenario(
        "get-score-abuse-on",
        "daemon",
        "GET",
        SCORE_PATH,
        baseline="get-score-abuse-off",
        target=0.95,
    ),
    # The request path's cost of Prometheus metrics (docs/metrics.md): the same score read
    # with metrics.enabled off, then on (the default), the second read against the first.
    Scenario(
        "get-score-metrics-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env=METRICS_OFF,
        baseline="baseline-get",
        target=0.50,
    ),
    Scenario(
        "get-score-metrics-on",
        "daemon",
        "GET",
        SCORE_PATH,
        baseline="get-score-metrics-off",
        target=0.95,
    ),
)


@dataclass(frozen=True)
class Settings:
    seconds: int
    warmup: int
    connections: int
    generator: GeneratorName
    rounds: int = 1


@dataclass(frozen=True)
class Server:
    """A running server and what a request to it needs: path values and credentials."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cpus: set[int] | None
    path_values: Mapping[str, str]
    headers: Mapping[str, str]


class ServerPool:
    """Starts each distinct server once, on the server CPU, and stops every one it started."""

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        self._workdir = workdir
        self._cpus = cpus
        self._servers: dict[tuple[str, tuple[tuple[str, str], ...]], Server] = {}
        self._processes: list[subprocess.Popen[bytes]] = []

    def get(self, scenario: Scenario) -> Server:
        key = scenario.server_key
        if key not in self._servers:
            start = self._start_baseline if scenario.server == "baseline" else self._start_daemon
            self._servers[key] = start(scenario.env, f"{scenario.server}-{len(self._servers)}")
        return self._servers[key]

    def close(self) -> None:
        for process in self._processes:
            stop(process, grace=15)  # SIGTERM first: the daemon drains, as in production

    def _launch(self, command: list[str], env: Mapping[str, str], name: str) -> Server:
        log = self._workdir / f"{name}.log"
        with log.open("wb") as out:
            process = spawn_pinned(
                command, self._cpus, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self._processes.append(process)
        return Server(process, wait_listening(process, log), log, self._cpus, {}, {})

    def _start_baseline(self, env: Mapping[str, str], name: str) -> Server:
        command = [sys.executable, "-m", "bench.minimal_app", "--port", "0"]
        server = self._launch(command, server_environ(env), name)
        return replace(server, path_values={"tenant_id": str(uuid.uuid4()), "item_id": SEED_ITEM})

    def _start_daemon(self, env: Mapping[str, str], name: str) -> Server:
        environ = server_environ(env)
        edge_node = [edge_node_executable(), "--data-dir", str(self._workdir / name)]
        create = ["tenants", "create", "--name", "bench", "--rate-limit", RATE_LIMIT_PER_MINUTE]
        created = subprocess.run(
            [*edge_node, *create], env=environ, capture_output=True, check=False, timeout=60
        )
        if created.returncode != 0:
            raise RuntimeError(f"edge-node tenants create failed: {created.stderr.decode()}")
        tenant = json.loads(created.stdout)
        server = self._launch([*edge_node, "serve", "--port", "0"], environ, name)
        headers = {"X-API-Key": tenant["api_key"]}
        seed_ratings(server.port, tenant["tenant_id"], headers)
        values = {"tenant_id": tenant["tenant_id"], "item_id": SEED_ITEM}
        return replace(server, path_values=values, headers=headers)


def server_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without inherited EDGE_NODE_* settings, plus the scenario's own."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    return {**inherited, **extra}


def edge_node_executable() -> str:
    beside = Path(sys.executable).with_name("edge-node")
    found = str(beside) if beside.exists() else shutil.which("edge-node")
    if found is None:
        raise SystemExit("bench: the edge-node command is not installed; run `make install`")
    return found


def wait_listening(process: subprocess.Popen[bytes], log: Path) -> int:
    """The port a starting server announces in its log; an error if it dies or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"{log.stem} did not start listening:\n{log_tail(log)}")


def log_tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def seed_ratings(port: int, tenant_id: str, headers: Mapping[str, str]) -> None:
    """Commented ratings on the item the GET scenarios read: its score is not empty and a
    page of 50 is full."""
    url = f"http://127.0.0.1:{port}{RATINGS_PATH.format(tenant_id=tenant_id)}"
    for index in range(SEED_RATINGS):
        body = {
            "user_id": f"seed-{index}",
            "item_id": SEED_ITEM,
            "score": index % 5 + 1,
            "comment": f"seeded comment number {index}, a sentence of ordinary length",
        }
        data, kind = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data, {**headers, **kind}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 201), response.status


def measure(
    scenario: Scenario, server: Server, settings: Settings, cpus: set[int] | None
) -> Measurement:
    """Warm up, then measure; an error if the server died while it was being measured."""
    headers = dict(server.headers)
    if scenario.body is not None:
        headers["Content-Type"] = "application/json"
    path = scenario.path.format(**server.path_values)
    target = Target("127.0.0.1", server.port, scenario.method, path, headers, scenario.body)
    tag = uuid.uuid4().hex[:8]  # fresh users every run: creates stay creates
    run = functools.partial(
        RUNNERS[settings.generator], target, connections=settings.connections, cpus=cpus
    )
    if settings.warmup:
        run(seconds=settings.warmup, tag=f"{tag}w")
    cpus = server.cpus or set()
    before = cpu_seconds(server.process.pid, cpus)
    measured = run(seconds=settings.seconds, tag=f"{tag}m")
    if server.process.poll() is not None:
        raise RuntimeError(f"the server of {scenario.name} died:\n{log_tail(server.log)}")
    own, busy = (b - a for a, b in zip(before, cpu_seconds(server.process.pid, cpus), strict=True))
    others = max(0.0, busy - own) / measured.seconds if server.cpus else None
    return replace(measured, server_cpu=own / measured.seconds, others_cpu=others)


def run_scenarios(
    scenarios: Sequence[Scenario], settings: Settings
) -> dict[str, list[Measurement]]:
    """Every scenario once per round, in order, so each one runs right after its baseline."""
    server_cpus, loadgen_cpus = split_cpus()
    measured: dict[str, list[Measurement]] = {s.name: [] for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="edge-node-bench-") as workdir:
        pool = ServerPool(Path(workdir), server_cpus)
        try:
            for round_no, scenario in itertools.product(range(settings.rounds), scenarios):
                print(f"bench: {scenario.name}, round {round_no + 1}", file=sys.stderr)
                server = pool.get(scenario)
                measured[scenario.name].append(measure(scenario, server, settings, loadgen_cpus))
        finally:
            pool.close()
    return measured


def result_row(
    scenario: Scenario, runs: Sequence[Measurement], bases: Sequence[Measurement]
) -> dict[str, Any]:
    """The median round's figures, and the medians of the rounds' ratios to their baseline."""
    got = sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]
    pairs = list(zip(runs, bases, strict=False))
    ratio = median_of([(run.requests_per_second, base.requests_per_second) for run, base in pairs])
    cpu_ratio = median_of([(b.cpu_us_per_request, r.cpu_us_per_request) for r, b in pairs])
    return {
        "scenario": scenario.name,
        "request": f"{scenario.method} {scenario.path}",
        "server": scenario.server,
        "server_env": dict(scenario.env),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(got).items()},
        "requests_per_second": round(got.requests_per_second, 1),
        "cpu_us_per_request": round(got.cpu_us_per_request or 0, 1),
        "rounds_requests_per_second": [round(run.requests_per_second, 1) for run in runs],
        "non_2xx": sum(run.non_2xx for run in runs),
        "socket_errors": sum(run.socket_errors for run in runs),
        "others_cpu": max((run.others_cpu or 0.0 for run in runs), default=None),
        "baseline": scenario.baseline,
        "ratio": None if ratio is None else round(ratio, 4),
        "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 4),
        "target": scenario.target,
        "meets_target": None if ratio is None or not scenario.target else ratio >= scenario.target,
    }


def median_of(fractions: Sequence[tuple[float | None, float | None]]) -> float | None:
    """The median of the fractions whose both terms are known and the divisor is not 0."""
    values = [top / bottom for top, bottom in fractions if top is not None and bottom]
    return statistics.median(values) if values else None


def machine(settings: Settings, wrk: str | None) -> dict[str, Any]:
    server_cpus, loadgen_cpus = split_cpus()
    generator = wrk if settings.generator == "wrk" else "python (bench.loadgen)"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "loop": f"uvloop {version('uvloop')}",
        "aiohttp": version("aiohttp"),
        "load_generator": generator,
        "server_cpus": sorted(server_cpus) if server_cpus else "unpinned",
        "load_generator_cpus": sorted(loadgen_cpus) if loadgen_cpus else "unpinned",
    }


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def markdown(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any], s: Settings) -> str:
    lines = [
        "| scenario | requests/s | p50 ms | p99 ms | non-2xx | server CPU | CPU µs/req | ratio"
        " | CPU ratio | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    noisy = {row["scenario"] for row in rows if is_noisy(row)}
    for row in rows:
        ratio = "baseline" if row["baseline"] is None else percent(row["ratio"])
        target = "" if row["target"] is None else f">= {row['target']:.0%}"
        if row["meets_target"] is not None:
            target += " ok" if row["meets_target"] else " **BELOW**"
            target += " (unreliable)" if {row["scenario"], row["baseline"]} & noisy else ""
        lines.append(
            f"| {row['scenario']} | {row['requests_per_second']:,.0f} | {row['p50_ms']:.2f}"
            f" | {row['p99_ms']:.2f} | {row['non_2xx'] + row['socket_errors']}"
            f" | {cpu_cell(row)} | {row['cpu_us_per_request']:.0f} | {ratio}"
            f" | {'' if row['baseline'] is None else percent(row['cpu_ratio'])} | {target} |"
        )
    lines += ["", *machine_lines(info, s)]
    lines += [f"**WARNING**: {warning}" for warning in noise_warnings(rows)]
    lines += [f"**ERROR**: {problem}" for problem in problems(rows)]
    return "\n".join(lines)


def is_noisy(row: Mapping[str, Any]) -> bool:
    """Whether others shared the server's CPU, or a baseline did not saturate its own."""
    crowded = (row["others_cpu"] or 0) >= NOISY_SHARE
    return crowded or (row["server"] == "baseline" and row["server_cpu"] < SATURATED_SHARE)


def noise_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why these figures may not be the servers' own: a busy machine, an unsaturated baseline."""
    warnings = []
    busy = max(rows, key=lambda row: row["others_cpu"] or 0)
    if (busy["others_cpu"] or 0) >= NOISY_SHARE:
        warnings.append(
            f"other processes took up to {busy['others_cpu']:.0%} of the server's CPU"
            f" ({busy['scenario']}): the machine is busy and the ratios are unreliable."
        )
    warnings += [
        f"{row['scenario']} kept its server only {row['server_cpu']:.0%} busy: the load"
        " generator (or the machine) held it back, so ratios against it are overstated."
        for row in rows
        if row["server"] == "baseline" and row["server_cpu"] < SATURATED_SHARE
    ]
    return warnings


def percent(ratio: float | None) -> str:
    """Truncated, not rounded: a ratio just under its target never shows as reaching it."""
    return "n/a" if ratio is None else f"{math.floor(ratio * 1000) / 10}%"


def cpu_cell(row: Mapping[str, Any]) -> str:
    others = row["others_cpu"] or 0
    return f"{row['server_cpu']:.0%}" + (f" (+{others:.0%} others)" if others >= 0.05 else "")


def machine_lines(info: Mapping[str, Any], s: Settings) -> list[str]:
    rounds = f"median of {s.rounds} rounds of " if s.rounds > 1 else ""
    lines = [
        f"Machine: {info['cores']} cores ({info['cpu']}), Python {info['python']},"
        f" {info['loop']}, aiohttp {info['aiohttp']}.",
        f"Load generator: {info['load_generator']}, {s.connections} connections, {rounds}"
        f"{s.seconds} s per scenario after {s.warmup} s of warm-up; servers on CPU"
        f" {info['server_cpus']}, load generator on CPU {info['load_generator_cpus']}."
        " How to read this: docs/benchmarks.md.",
    ]
    if s.generator == "python":
        lines.append(
            "Note: the Python load generator may saturate before a fast server does, which"
            " understates the baseline and so overstates the ratios; install wrk for real figures."
        )
    return lines


def problems(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        f"{row['scenario']}: {row['non_2xx']} non-2xx answers, {row['socket_errors']} socket errors"
        for row in rows
        if row["non_2xx"] or row["socket_errors"]
    ]


def write_json(document: Mapping[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"http-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds measured per scenario")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per scenario")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the median is reported")
    names = ", ".join(scenario.name for scenario in SCENARIOS)
    parser.add_argument("--scenarios", help=f"comma-separated subset of: {names}")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.rounds) < 1 or args.warmup < 0:
        parser.error("--duration, --connections and --rounds must be at least 1, --warmup >= 0")
    return args


def select_scenarios(names: str | None) -> list[Scenario]:
    """The named scenarios, in SCENARIOS order, with the baselines they are divided by."""
    known = {scenario.name: scenario for scenario in SCENARIOS}
    wanted = {name.strip() for name in (names or ",".join(known)).split(",") if name.strip()}
    unknown = wanted - known.keys()
    if unknown:
        raise SystemExit(f"bench: unknown scenarios {sorted(unknown)}; choose from {list(known)}")
    wanted |= {base for name in wanted if (base := known[name].baseline)}
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select_scenarios(args.scenarios)
    for scenario in scenarios:
        check_template(scenario.body or "")
    wrk = wrk_version()
    generator = choose_generator(args.loadgen, wrk)
    settings = Settings(args.duration, args.warmup, args.connections, generator, args.rounds)
    # SIGTERM becomes SystemExit, so the finally clauses stop every process we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    measured = run_scenarios(scenarios, settings)
    rows = [result_row(s, measured[s.name], measured.get(s.baseline or "", [])) for s in scenarios]
    info = machine(settings, wrk)
    print(markdown(rows, info, settings))
    document = {"timestamp": stamp, "machine": info, "settings": asdict(settings), "results": rows}
    print(f"\nResults written to {write_json(document, stamp)}")
    for problem in problems(rows):
        print(f"bench: ERROR {problem}", file=sys.stderr)
    return 1 if problems(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
