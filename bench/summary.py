"""The HTTP benchmark's summary: each scenario's ratios to its baseline, as a Markdown table.

A row is the median round's figures and the medians of the rounds' ratios; the table comes
with the machine it ran on, and with a warning wherever the figures may not be the servers'
own (a busy machine, a baseline its load generator could not saturate).
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.loadgen import Measurement
from bench.measure import Settings
from bench.processes import split_cpus
from bench.scenarios import Scenario

NOISY_SHARE = 0.10  # other processes using this much of the server's CPU make a run noise
SATURATED_SHARE = 0.90  # a baseline using less of its CPU was not the bottleneck


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
