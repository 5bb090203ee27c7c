"""The performance report's writer: every figure of a result set in its Markdown, and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.report.sweep import REQUESTS, SWEEP_SCENARIOS, VARIANTS
from bench.report.write import cell, write_report

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONNECTIONS = (1, 4, 64)


def synthetic_results() -> dict[str, Any]:
    """A small result set in the shape bench.report measures, with distinct figures."""
    sweep: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for request, variant in SWEEP_SCENARIOS:
        r, v = list(REQUESTS).index(request), VARIANTS.index(variant)
        sweep.setdefault(request, {})[variant] = [
            {
                "connections": c,
                "requests_per_second": 1000.0 * (r + 1) + 100 * v + c + 0.5,
                "p50_ms": 0.25 + v + c / 100,
                "p99_ms": 1.5 + v + c / 10,
                "errors": v,
                "server_cpu": 0.97,
                "cpu_us_per_request": 80.0 + 10 * v + r,
                "others_cpu": 0.0,
            }
            for c in CONNECTIONS
        ]
    return {
        "timestamp": "2026-12-01 20:00 UTC",
        "elapsed_seconds": 42,
        "settings": {
            "command": "python -m bench.report --quick",
            "connections": list(CONNECTIONS),
            "seconds": 2,
            "warmup": 1,
        },
        "machine": {
            "cores": 2,
            "cpu": "Synthetic CPU 9000",
            "memory": "7.5 GiB",
            "kernel": "Linux 6.1.0-test",
            "python": "3.11.7",
            "loop": "uvloop 0.23.0",
            "sqlite": "3.40.1",
            "aiohttp": "3.14.5",
            "load_generator": "wrk 4.1.0",
            "server_cpus": [0],
            "load_generator_cpus": [1],
        },
        "load_before": [0.37, 1.25, 2.5],
        "load_after": [1.75, 1.5, 2.25],
        "sweep": sweep,
        "sections": [
            {
                "title": "Durable queue appends",
                "command": "python -m bench.queue_append",
                "note": "appends against one fsync each",
                "columns": ["mode", "appends/s", "x write+fsync"],
                "rows": [["write+fsync per record", 6681, 1.0], ["queue, 64", 109410, 16.38]],
            },
            {"title": "Billing flush to the Stripe stand-in", "error": "RuntimeError: no Stripe"},
        ],
    }


def test_report_names_every_figure_and_writes_valid_pngs(tmp_path: Path) -> None:
    """The Markdown shows every measured figure, the machine and both load averages, and
    links plots that exist as valid PNG files."""
    results = synthetic_results()
    readme, plots = write_report(results, tmp_path / "performance")

    text = readme.read_text()
    for request, variant in SWEEP_SCENARIOS:
        for point in results["sweep"][request][variant]:
            assert f"{point['requests_per_second']:,.1f}" in text
            assert f"{point['p50_ms']:.2f}" in text
            assert f"{point['p99_ms']:.2f}" in text
            assert f"| {point['cpu_us_per_request']:,.0f} |" in text
    for value in results["machine"].values():
        assert str(value) in text
    for load in (results["load_before"], results["load_after"]):
        assert ", ".join(f"{v:.2f}" for v in load) in text
    queue = results["sections"][0]
    for row in queue["rows"]:
        assert "| " + " | ".join(cell(value) for value in row) + " |" in text
    assert "RuntimeError: no Stripe" in text  # a failed benchmark is named, not dropped

    assert len(plots) == len(REQUESTS)
    for path in plots:
        assert f"]({path.name})" in text
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        assert path.stat().st_size > 10_000  # drawn, not an empty canvas


def test_headline_reads_each_variant_against_the_baseline_at_64_connections(
    tmp_path: Path,
) -> None:
    """The headline's ratios are each variant's requests/s over the minimal handler's, and
    the minimal handler's CPU per request over the variant's, at 64 connections, truncated
    to a tenth of a percent."""
    results = synthetic_results()
    readme, _ = write_report(results, tmp_path)
    headline = readme.read_text().split("## Headline")[1].split("## Machine")[0]
    get = results["sweep"]["get"]
    strict = get["strict"][-1]["requests_per_second"]
    base = get["baseline"][-1]["requests_per_second"]
    expected = int(strict / base * 1000) / 10
    assert f"{expected}% ({strict:,.0f} req/s)" in headline
    ours = get["strict"][-1]["cpu_us_per_request"]
    theirs = get["baseline"][-1]["cpu_us_per_request"]
    assert f"{int(theirs / ours * 1000) / 10}% ({ours:,.0f} µs)" in headline


def test_report_warns_when_other_processes_shared_the_server_cpu(tmp_path: Path) -> None:
    """A sweep point where others took 10% or more of the server's CPU makes the report
    warn that the machine was shared; a quiet sweep has no such warning."""
    results = synthetic_results()
    quiet, _ = write_report(results, tmp_path / "quiet")
    assert "**Noise**" not in quiet.read_text()
    results["sweep"]["post"]["strict"][0]["others_cpu"] = 0.35
    noisy, _ = write_report(results, tmp_path / "noisy")
    assert "**Noise**: at 1 of 30 points" in noisy.read_text()
    assert "up to 35%" in noisy.read_text()


def test_targets_compare_strict_metering_with_the_minimal_handler_at_64(tmp_path: Path) -> None:
    """The targets table gives each request's strict requests/s and p99 as ratios of the
    minimal handler's at 64 connections, says whether each target is met, and the list
    endpoint, which has no target, is reported too."""
    readme, _ = write_report(synthetic_results(), tmp_path / "out")
    text = readme.read_text()
    get = (
        "| GET .../items/{item_id}/score | 1.28x (met) | 0.60x | 72.7% | 10.9 (7.9) | 1.38x (met) |"
    )
    assert get in text
    assert "| GET .../ratings?item_id=...&limit=50 | 1.10x |  |" in text
