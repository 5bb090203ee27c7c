"""The project's other benchmarks, each run briefly and turned into one table of the report.

Each function calls the benchmark module's own measuring functions (bench.request_path,
bench.queue_append,
bench.encryption, bench.workers, bench.metrics, bench.guards, bench.served, bench.ratelimit,
bench.billing,
bench.sync, bench.crash) and returns a section: a title, the command that reproduces it at
full length, a note on how to read it, and rows. Their own progress lines go to stderr.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import (
    encryption,
    guards,
    metrics,
    queue_append,
    ratelimit,
    request_path,
    served,
    workers,
)
from bench import sync as sync_bench
from bench.loadgen import GeneratorName
from bench.measure import Settings
from bench.summary import result_row

Section = dict[str, Any]  # title, command, note, columns, rows: JSON all the way down


@dataclass(frozen=True)
class Scale:
    """How long the benchmarks run: the default report, or --quick."""

    generator: GeneratorName
    quick: bool = False
    against: str | None = None  # a git revision bench.request_path also measures

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def section(
    title: str, command: str, note: str, columns: list[str], rows: list[list[Any]]
) -> Section:
    return {"title": title, "command": command, "note": note, "columns": columns, "rows": rows}


def queue_appends(scale: Scale) -> Section:
    seconds = scale.pick(2, 1)
    with tempfile.TemporaryDirectory(prefix="edge-node-report-queue-") as scratch:
        root = Path(scratch)
        base = queue_append.measure_raw(root, seconds)
        rows = uvloop.run(queue_append.run_all(root, [1, 64, 512], seconds))
    table = [
        [
            row.label,
            round(row.rate),
            round(row.rate / base.rate, 2),
            round(row.appends / max(row.fsyncs, 1), 1),
            round(queue_append.percentile_us(row.latencies, 0.5)),
            round(queue_append.percentile_us(row.latencies, 0.99)),
        ]
        for row in (base, *rows)
    ]
    return section(
        "Durable queue appends",
        "python -m bench.queue_append --seconds 3 --concurrency 1 64 512 --uvloop",
        f"{seconds} s per row on the disk under the temporary directory, on uvloop as the daemon"
        " runs; every append counted was fsynced. Ratio: against one write+fsync per record;"
        " with N appenders each waiting for its append, a batch holds at most N records, so"
        " appends/s is at most N per fsync's time.",
        ["mode", "appends/s", "x write+fsync", "records/fsync", "p50 µs", "p99 µs"],
        table,
    )


def request_path_cost(scale: Scale) -> Section:
    best = request_path.measure(
        scale.pick(10_000, 3_000), 64, scale.pick(3, 1), against=scale.against
    )
    before = (
        f" `{scale.against}` is the code before, measured in the same turns."
        if scale.against
        else ""
    )
    return section(
        "Request path, in-process",
        "python -m bench.request_path --rounds 5 --requests 20000"
        + (f" --against {scale.against}" if scale.against else ""),
        "The app driven through aiohttp's own connection handler over in-memory transports"
        " (no sockets, no load generator): 64 connections, each sending its next request when"
        " its answer is written; strict metering, the queue fsynced. Each scenario in a process"
        " of its own with the minimal app beside it, the two taking turns in chunks of"
        " requests; the round with the best ratio counts. Ratio: the minimal app's event-loop"
        " CPU per request over edge-node's, in the same process." + before,
        request_path.COLUMNS,
        request_path.table(best),
    )


def encryption_cost(scale: Scale) -> Section:
    settings = Settings(scale.pick(4, 2), 1, 64, scale.generator, 1)
    measured = encryption.run(settings)
    rows = [
        result_row(s, measured[s.name], measured.get(s.baseline or "", []))
        for s in encryption.SCENARIOS
    ]
    table: list[list[Any]] = [
        [
            row["scenario"],
            row["requests_per_second"],
            row["p99_ms"],
            row["cpu_us_per_request"],
            row["ratio"] if row["baseline"] else "baseline",
            row["cpu_ratio"] if row["baseline"] else "",
        ]
        for row in rows
    ]
    costs = encryption.store_costs(repetitions=scale.pick(100, 30))
    for call in ("upsert", "page-cold", "page-warm"):
        plain, sealed = costs[f"{call}-plain"], costs[f"{call}-sealed"]
        table.append(
            [
                f"store {call} (µs plain / sealed)",
                round(plain, 1),
                "",
                round(sealed, 1),
                round(plain / sealed, 3),
                "",
            ]
        )
    return section(
        "Comment encryption",
        "python -m bench.encryption --rounds 3",
        "HTTP: 64 connections, sealed against plain comments; ratio = requests/s sealed/plain,"
        " CPU ratio = CPU µs per request plain/sealed. Store rows: best µs per call,"
        " in-process; their ratio is plain/sealed.",
        ["scenario", "requests/s", "p99 ms", "CPU µs/req", "ratio", "CPU ratio"],
        table,
    )


def worker_scaling(scale: Scale) -> Section:
    results = workers.measure(scale.generator, scale.pick(5, 2), 1, 64, 1)
    one = statistics.median(m.requests_per_second for m in results[1])
    rows = [
        [
            f"--workers {count}",
            round(statistics.median(m.requests_per_second for m in runs), 1),
            round(statistics.median(m.p50_ms for m in runs), 2),
            round(statistics.median(m.p99_ms for m in runs), 2),
            round(statistics.median(m.requests_per_second for m in runs) / one, 3),
        ]
        for count, runs in results.items()
    ]
    return section(
        "Worker processes",
        "python -m bench.workers --rounds 2",
        "The score read at 64 connections, servers unpinned (the second worker needs the"
        " second core, which the load generator shares). Ratio: against one worker.",
        ["workers", "requests/s", "p50 ms", "p99 ms", "ratio"],
        rows,
    )


def metrics_cost(scale: Scale) -> Section:
    figures = asyncio.run(metrics.measure(scale.pick(100_000, 20_000), 3))
    return section(
        "Prometheus metrics, in-process",
        "python -m bench.metrics",
        "A score request through the node's front counting it, against the same front"
        " with metrics off; no HTTP.",
        ["measured", "µs per request"],
        [[name, round(value, 3)] for name, value in figures.items()],
    )


def guards_cost(scale: Scale) -> Section:
    results = asyncio.run(guards.measure(1000, 1000, scale.pick(100, 20)))
    base = results["minimal app"]
    return section(
        "Request guards, in-process",
        "python -m bench.guards",
        "The front and app._handle only (no HTTP parsing or writing, so the ratios overstate"
        " the cost);"
        " 1000 requests from 1000 client IPs. Ratio: against the minimal app.",
        ["variant", "µs/request", "added µs", "ratio"],
        [
            [name, round(us, 2), round(us - base, 2), round(us / base, 3)]
            for name, us in results.items()
        ],
    )


def served_cost(scale: Scale) -> Section:
    events = scale.pick(50_000, 10_000)
    figures = served.measure(events, 100, scale.pick(3, 1), None)
    per = 1e6 / events
    base = figures["baseline"]
    rows = [
        ["counter add alone", round(figures["add"] * per, 2), round(figures["add"] / base, 3)],
        ["Meter.record, no counter", round(base * per, 2), 1.0],
        [
            "Meter.record, counted",
            round(figures["counted"] * per, 2),
            round(figures["counted"] / base, 3),
        ],
    ]
    return section(
        "Served-request counter",
        "python -m bench.served",
        f"{events} usage events over 100 tenants, batched durability. Ratio: time against"
        " Meter.record without the counter.",
        ["row", "µs/event", "x baseline"],
        rows,
    )


def rate_limit_cost(scale: Scale) -> Section:
    takes = scale.pick(200_000, 20_000)
    figures = ratelimit.measure(takes, 100, scale.pick(3, 1))
    per = 1e6 / takes
    base = figures["local"]
    rows = [
        ["one process's buckets (serve)", round(base * per, 2), 1.0],
        [
            "buckets shared by workers (serve --workers N)",
            round(figures["shared"] * per, 2),
            round(figures["shared"] / base, 2),
        ],
    ]
    return section(
        "Rate-limit decision",
        "python -m bench.ratelimit",
        f"{takes} decisions over 100 tenants. Ratio: time against one process's buckets; a"
        " billable score read costs about 125 µs in all.",
        ["row", "µs/decision", "x baseline"],
        rows,
    )


def billing_flush(scale: Scale) -> Section:
    from bench import billing  # noqa: PLC0415 - imports the Stripe SDK

    events = scale.pick(200_000, 20_000)
    result = billing.run(billing.parse_args(["--events", str(events), "--tenants", "50"]))
    return section(
        "Billing flush to the Stripe stand-in",
        "python -m bench.billing --events 1000000",
        "A queued backlog of usage events billed through the official SDK; the Stripe calls"
        " must stay within one per tenant and window, and every customer billed exactly.",
        ["figure", "value"],
        [[key, value] for key, value in result.items()],
    )


def sync_central(scale: Scale) -> Section:
    from sync.central.schema import migrate_dsns  # noqa: PLC0415
    from tests.postgres import start_server  # noqa: PLC0415

    rows: list[list[Any]] = []
    server = start_server()
    try:

        def fresh() -> str:
            dsn = server.dsn(server.create_database())
            asyncio.run(migrate_dsns([dsn]))
            return dsn

        with tempfile.TemporaryDirectory(prefix="edge-node-report-sync-") as tmp:
            count = scale.pick(50_000, 5_000)
            up = asyncio.run(sync_bench.bench_upload(fresh(), Path(tmp, "up"), count, 1000))
            rows.append([f"upload of {count} rows", round(up["upload_rows_per_second"]), "rows/s"])
            rows.append(
                [f"download of {count} rows", round(up["download_rows_per_second"]), "rows/s"]
            )
            writes = scale.pick(2_000, 500)
            converged = asyncio.run(
                sync_bench.bench_converge(fresh(), Path(tmp, "conv"), writes, 3, 1.0, 1000)
            )
            rows.append(
                [f"3 nodes x {writes} writes converge", round(converged["seconds"], 2), "s"]
            )
            tenants = scale.pick(300, 100)
            stalls = asyncio.run(
                sync_bench.bench_stall(fresh(), Path(tmp, "stall"), tenants, 5, 1000)
            )
            for name, (seconds, stall, cpu) in stalls.items():
                rows.append(
                    [
                        f"{name}, {tenants} tenants: round / worst stall / CPU in one turn",
                        f"{seconds * 1e3:.0f} / {stall * 1e3:.1f} / {cpu * 1e3:.1f}",
                        "ms",
                    ]
                )
    finally:
        server.stop()
    return section(
        "Sync with the central PostgreSQL",
        "python -m bench.sync upload|converge|stall",
        "A throwaway PostgreSQL with fsync off, so the server's disk is left out.",
        ["measured", "value", "unit"],
        rows,
    )


def crash_rounds(scale: Scale) -> Section:
    from bench.crash import Totals, run  # noqa: PLC0415

    rounds = scale.pick(20, 3)
    totals = Totals()
    with tempfile.TemporaryDirectory(prefix="edge-node-report-crash-") as scratch:
        asyncio.run(run(rounds, Path(scratch) / "var", 8, totals))
    return section(
        "Crash rounds (correctness, not speed)",
        "python -m bench.crash --rounds 1000",
        "SIGKILL of the daemon under load, then every acknowledged request checked against"
        " the queue and the tenant's file. A short run; docs/durability.md has the long one.",
        ["figure", "value"],
        [
            ["rounds", totals.rounds],
            ["SIGKILLs", totals.kills],
            ["requests acknowledged / sent", f"{totals.acknowledged} / {totals.sent}"],
            ["violations", len(totals.violations)],
            ["wall seconds", round(totals.wall_seconds, 1)],
        ],
    )


BENCHMARKS: dict[str, Callable[[Scale], Section]] = {
    "request_path": request_path_cost,
    "queue": queue_appends,
    "encryption": encryption_cost,
    "workers": worker_scaling,
    "metrics": metrics_cost,
    "guards": guards_cost,
    "served": served_cost,
    "ratelimit": rate_limit_cost,
    "billing": billing_flush,
    "sync": sync_central,
    "crash": crash_rounds,
}
