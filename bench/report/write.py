"""The performance report's writer: results (plain data) in, Markdown and PNG plots out.

It takes the whole result set as one JSON-shaped mapping (what bench.report measures, also
written beside the report as results.json), so it can be run, and tested, on results that
were not measured here. matplotlib is imported here only, on the headless Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.report.sweep import REQUESTS, VARIANT_TITLES, VARIANTS
from bench.summary import NOISY_SHARE

HEADLINE_CONNECTIONS = 64
STYLES = {
    "baseline": {"color": "black", "linestyle": "--", "marker": "o"},
    "meter-off": {"color": "tab:green", "linestyle": "-", "marker": "s"},
    "batched": {"color": "tab:blue", "linestyle": "-", "marker": "^"},
    "strict": {"color": "tab:red", "linestyle": "-", "marker": "D"},
}
PLOT_TITLES = {
    "get": "GET /v1/tenants/{t}/items/{i}/score",
    "post": "POST /v1/tenants/{t}/ratings",
    "list": "GET /v1/tenants/{t}/ratings?limit=50",
}
PLOT_NAMES = {"get": "get-score.png", "post": "post-ratings.png", "list": "list-ratings.png"}
# What the daemon must reach at HEADLINE_CONNECTIONS with strict metering, as a share of the
# minimal handler's requests/s (None: reported, no target); p99 at most P99_TARGET times the
# minimal handler's; no p99 in seconds at 256 connections.
TARGETS = {"get": 0.60, "post": 0.45, "list": None}
P99_TARGET = 2.0


def plot_name(request: str) -> str:
    return PLOT_NAMES[request]


def measured_variants(by_variant: Mapping[str, Any]) -> list[str]:
    """The variants measured for one request kind, in VARIANTS order."""
    return [variant for variant in VARIANTS if variant in by_variant]


def write_report(results: Mapping[str, Any], out: Path) -> tuple[Path, list[Path]]:
    """README.md and one PNG per request kind under `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        plot(results, request, out / plot_name(request))
        for request in REQUESTS
        if request in results["sweep"]
    ]
    readme = out / "README.md"
    readme.write_text(markdown(results))
    return readme, plots


def plot(results: Mapping[str, Any], request: str, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - the optional `bench` dependency group

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    sweep = results["sweep"][request]
    figure, (throughput, latency) = pyplot.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for variant in measured_variants(sweep):
        points = sweep[variant]
        x = [p["connections"] for p in points]
        style = STYLES[variant]
        label = VARIANT_TITLES[variant]
        throughput.plot(x, [p["requests_per_second"] for p in points], label=label, **style)
        latency.plot(x, [p["p99_ms"] for p in points], label=label, **style)
    for axes, ylabel in ((throughput, "throughput (requests/s)"), (latency, "p99 latency (ms)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent connections")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="major", alpha=0.3)
        connections = [p["connections"] for p in sweep["baseline"]]
        axes.set_xticks(connections, [str(c) for c in connections])
    throughput.set_ylim(bottom=0)
    latency.set_yscale("log")
    plain = FuncFormatter(log_tick)
    latency.yaxis.set_major_formatter(plain)
    latency.yaxis.set_minor_formatter(plain)
    throughput.legend(loc="best", fontsize=8)
    figure.suptitle(f"{PLOT_TITLES[request]}: throughput and p99 against concurrency")
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
    return path


def log_tick(value: float, _position: object = None) -> str:
    """1, 2 and 5 times a power of ten as plain numbers; the other ticks unlabelled."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if leading in (1, 2, 5) else ""


def markdown(results: Mapping[str, Any]) -> str:
    lines = ["# Performance report", "", *intro(results), "", "## Headline", ""]
    lines += headline(results["sweep"])
    lines += ["", *targets(results["sweep"])]
    lines += noise(results["sweep"])
    lines += ["", "## Machine", "", *machine_table(results), ""]
    for request, title in REQUESTS.items():
        if request not in results["sweep"]:
            continue
        lines += [f"## {title} against concurrency", "", f"![{title}]({plot_name(request)})", ""]
        lines += sweep_table(results["sweep"][request])
        lines.append("")
    for found in results["sections"]:
        lines += section_lines(found)
    return "\n".join(lines).rstrip() + "\n"


def intro(results: Mapping[str, Any]) -> list[str]:
    s = results["settings"]
    return [
        f"Written by `{s['command']}` on {results['timestamp']} in"
        f" {results['elapsed_seconds']:.0f} s. Every speed figure is read as a ratio against a"
        " baseline measured in the same run on the same core: the minimal aiohttp handler"
        " (`bench/minimal_app.py`) for the HTTP sweep, each table's own baseline elsewhere."
        " How the benchmarks work: [docs/benchmarks.md](../benchmarks.md). The raw figures:"
        " [results.json](results.json).",
        "",
        f"HTTP sweep: {', '.join(map(str, s['connections']))} keep-alive connections,"
        f" {s['seconds']} s measured after {s['warmup']} s of warm-up per point, load"
        f" generator {results['machine']['load_generator']}; servers on CPU"
        f" {results['machine']['server_cpus']}, load generator on CPU"
        f" {results['machine']['load_generator_cpus']}. Strict metering is the default: each"
        " answer waits for the fsync of its usage event; batched answers before it.",
    ]


def headline(sweep: Mapping[str, Any]) -> list[str]:
    lines = [
        f"At {HEADLINE_CONNECTIONS} connections, as a share of the minimal handler: requests/s,"
        " and server CPU per request (the minimal handler's CPU µs per request over the"
        " daemon's, which other processes on the machine disturb less than requests/s):",
        "",
        "| request | measure | " + " | ".join(VARIANT_TITLES[v] for v in VARIANTS[1:]) + " |",
        "|---|---|" + "---:|" * (len(VARIANTS) - 1),
    ]
    for request, title in REQUESTS.items():
        if request not in sweep:
            continue
        cells = [ratio_text(sweep[request], v, HEADLINE_CONNECTIONS) for v in VARIANTS[1:]]
        lines.append(f"| {title} | requests/s | " + " | ".join(cells) + " |")
        cells = [cpu_ratio_text(sweep[request], v, HEADLINE_CONNECTIONS) for v in VARIANTS[1:]]
        lines.append(f"| {title} | CPU per request | " + " | ".join(cells) + " |")
    return lines


def noise(sweep: Mapping[str, Any]) -> list[str]:
    """A warning naming how many points shared the server's CPU with other processes."""
    points = [p for by_variant in sweep.values() for ps in by_variant.values() for p in ps]
    crowded = [p for p in points if (p.get("others_cpu") or 0) >= NOISY_SHARE]
    if not crowded:
        return []
    worst = max(p["others_cpu"] for p in crowded)
    return [
        "",
        f"**Noise**: at {len(crowded)} of {len(points)} points other processes took"
        f" {NOISY_SHARE:.0%} or more of the server's CPU (up to {worst:.0%}; column"
        ' "server CPU"): the machine was shared, so single ratios swing; compare neighbours.',
    ]


def point_at(points: Sequence[Mapping[str, Any]], connections: int) -> Mapping[str, Any] | None:
    return next((p for p in points if p["connections"] == connections), None)


def targets(sweep: Mapping[str, Any]) -> list[str]:
    """Strict metering against the targets, at HEADLINE_CONNECTIONS and at 256 connections."""
    lines = [
        f"Targets, strict metering: requests/s at {HEADLINE_CONNECTIONS} connections as a share"
        f" of the minimal handler's, p99 at most {P99_TARGET:g}x the minimal handler's, and no"
        " p99 in seconds at 256 connections. Where other processes took the server's CPU"
        " (Noise, below) the minimal handler suffers most, so requests/s ratios run high: the"
        " CPU ratio (the minimal handler's CPU µs per request over the daemon's) is steadier.",
        "",
        "| request | requests/s ratio | target | CPU ratio | p99 ms (minimal) | p99 ratio"
        " | p99 ms at 256 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for request, title in REQUESTS.items():
        by_variant = sweep.get(request, {})
        got = point_at(by_variant.get("strict", []), HEADLINE_CONNECTIONS)
        base = point_at(by_variant.get("baseline", []), HEADLINE_CONNECTIONS)
        if got is None or base is None:
            continue
        target = TARGETS.get(request)
        ratio = got["requests_per_second"] / base["requests_per_second"]
        noisy = max(got.get("others_cpu") or 0, base.get("others_cpu") or 0) >= NOISY_SHARE
        met = "" if target is None else (" (met" if ratio >= target else " (not met")
        met += (", noisy)" if noisy else ")") if met else (" (noisy)" if noisy else "")
        p99_ratio = got["p99_ms"] / base["p99_ms"] if base["p99_ms"] else math.inf
        wide = point_at(by_variant["strict"], 256)
        wide_p99 = "n/a" if wide is None else f"{wide['p99_ms']:,.1f}"
        lines.append(
            f"| {title} | {ratio:.2f}x{met} | {'' if target is None else f'{target:.2f}x'} |"
            f" {cpu_ratio_text(by_variant, 'strict', HEADLINE_CONNECTIONS).split(' ')[0]} |"
            f" {got['p99_ms']:.1f} ({base['p99_ms']:.1f}) |"
            f" {p99_ratio:.2f}x{' (met)' if p99_ratio <= P99_TARGET else ' (not met)'} |"
            f" {wide_p99} |"
        )
    return lines


def ratio_text(by_variant: Mapping[str, Any], variant: str, connections: int) -> str:
    if variant not in by_variant:
        return "n/a"
    got = point_at(by_variant[variant], connections)
    base = point_at(by_variant["baseline"], connections)
    if got is None or base is None or not base["requests_per_second"]:
        return "n/a"
    ratio = got["requests_per_second"] / base["requests_per_second"]
    return f"{math.floor(ratio * 1000) / 10}% ({got['requests_per_second']:,.0f} req/s)"


def cpu_ratio_text(by_variant: Mapping[str, Any], variant: str, connections: int) -> str:
    if variant not in by_variant:
        return "n/a"
    got = point_at(by_variant[variant], connections)
    base = point_at(by_variant["baseline"], connections)
    ours = None if got is None else got.get("cpu_us_per_request")
    theirs = None if base is None else base.get("cpu_us_per_request")
    if not ours or not theirs:
        return "n/a"
    return f"{math.floor(theirs / ours * 1000) / 10}% ({ours:,.0f} µs)"


def sweep_table(by_variant: Mapping[str, Any]) -> list[str]:
    lines = [
        "| server | connections | requests/s | ratio | p50 ms | p99 ms | errors | server CPU"
        " | CPU µs/req | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in measured_variants(by_variant):
        for p in by_variant[variant]:
            ratio = (
                "baseline"
                if variant == "baseline"
                else ratio_text(by_variant, variant, p["connections"]).split(" ")[0]
            )
            cpu = "" if p["server_cpu"] is None else f"{p['server_cpu']:.0%}"
            if (p.get("others_cpu") or 0) >= 0.05:
                cpu += f" (+{p['others_cpu']:.0%} others)"
            us = p.get("cpu_us_per_request")
            cpu_ratio = (
                "baseline"
                if variant == "baseline"
                else cpu_ratio_text(by_variant, variant, p["connections"]).split(" ")[0]
            )
            lines.append(
                f"| {VARIANT_TITLES[variant]} | {p['connections']} |"
                f" {p['requests_per_second']:,.1f} | {ratio} | {p['p50_ms']:.2f} |"
                f" {p['p99_ms']:.2f} | {p['errors']} | {cpu} | {'' if us is None else f'{us:,.0f}'}"
                f" | {cpu_ratio} |"
            )
    return lines


def section_lines(found: Mapping[str, Any]) -> list[str]:
    lines = [f"## {found['title']}", ""]
    if found.get("error"):
        return [*lines, f"Not measured in this run: {found['error']}", ""]
    lines += [found["note"], "", f"Full length: `{found['command']}`.", ""]
    lines.append("| " + " | ".join(found["columns"]) + " |")
    lines.append("|---" * len(found["columns"]) + "|")
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in found["rows"]]
    return [*lines, ""]


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine_table(results: Mapping[str, Any]) -> list[str]:
    m = results["machine"]
    rows = [
        ("CPU", m["cpu"]),
        ("cores", m["cores"]),
        ("memory", m["memory"]),
        ("kernel", m["kernel"]),
        ("Python", m["python"]),
        ("event loop", m["loop"]),
        ("SQLite", m["sqlite"]),
        ("aiohttp", m["aiohttp"]),
        ("load generator", m["load_generator"]),
        ("load average before (1, 5, 15 min)", load_text(results["load_before"])),
        ("load average after (1, 5, 15 min)", load_text(results["load_after"])),
    ]
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def load_text(load: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)
