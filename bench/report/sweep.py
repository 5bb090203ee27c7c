"""The HTTP concurrency sweep: score reads and rating writes (metering off, batched and strict)
and pages of ratings (strict).

Every point is measured with the HTTP benchmark's own machinery (its scenarios, servers,
pinning, warm-up and wrk or Python load generator: bench.scenarios, bench.servers and
bench.measure), the minimal aiohttp app first at each concurrency, so every daemon figure is
read against a baseline measured moments before it on the same core.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import GeneratorName
from bench.measure import Settings, measure
from bench.processes import split_cpus
from bench.scenarios import SCENARIOS, Scenario
from bench.servers import ServerPool

# Kinds of request, and the variants each is measured in; "baseline" is the minimal app.
REQUESTS = {
    "get": "GET .../items/{item_id}/score",
    "post": "POST .../ratings",
    "list": "GET .../ratings?item_id=...&limit=50",
}
VARIANTS = ("baseline", "meter-off", "batched", "strict")
VARIANT_TITLES = {
    "baseline": "minimal aiohttp handler",
    "meter-off": "edge-node, metering off",
    "batched": "edge-node, metering batched",
    "strict": "edge-node, metering strict",
}
_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
SWEEP_SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("get", "baseline"): _BY_NAME["baseline-get"],
    ("get", "meter-off"): _BY_NAME["get-score-meter-off"],
    ("get", "batched"): _BY_NAME["get-score-batched"],
    ("get", "strict"): _BY_NAME["get-score"],
    ("post", "baseline"): _BY_NAME["baseline-post"],
    ("post", "meter-off"): _BY_NAME["post-rating-meter-off"],
    ("post", "batched"): _BY_NAME["post-rating-batched"],
    ("post", "strict"): _BY_NAME["post-rating"],
    # A page of 50 ratings, against the minimal app's list route: strict metering only.
    ("list", "baseline"): _BY_NAME["baseline-list"],
    ("list", "strict"): _BY_NAME["list-ratings"],
}


@dataclass(frozen=True)
class SweepSettings:
    connections: tuple[int, ...]
    seconds: int
    warmup: int
    generator: GeneratorName


def point(measured: Any, connections: int) -> dict[str, Any]:
    """One measured point as plain data."""
    return {
        "connections": connections,
        "requests_per_second": round(measured.requests_per_second, 1),
        "p50_ms": round(measured.p50_ms, 3),
        "p99_ms": round(measured.p99_ms, 3),
        "errors": measured.non_2xx + measured.socket_errors,
        "server_cpu": None if measured.server_cpu is None else round(measured.server_cpu, 3),
        "cpu_us_per_request": (
            None if measured.cpu_us_per_request is None else round(measured.cpu_us_per_request, 1)
        ),
        "others_cpu": None if measured.others_cpu is None else round(measured.others_cpu, 3),
    }


def run_sweep(settings: SweepSettings) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{request: {variant: [point per concurrency]}}, baseline first at every concurrency."""
    server_cpus, loadgen_cpus = split_cpus()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {request: {} for request in REQUESTS}
    for request, variant in SWEEP_SCENARIOS:
        results[request][variant] = []
    with tempfile.TemporaryDirectory(prefix="edge-node-report-") as workdir:
        pool = ServerPool(Path(workdir), server_cpus)
        try:
            for connections in settings.connections:
                for (request, variant), scenario in SWEEP_SCENARIOS.items():
                    print(f"report: {scenario.name} at {connections}", file=sys.stderr)
                    once = Settings(
                        settings.seconds, settings.warmup, connections, settings.generator
                    )
                    measured = measure(scenario, pool.get(scenario), once, loadgen_cpus)
                    results[request][variant].append(point(measured, connections))
        finally:
            pool.close()
    return results


def ratio_at(
    sweep: dict[str, dict[str, list[dict[str, Any]]]], request: str, variant: str, connections: int
) -> float | None:
    """requests/s of a variant over the baseline's, at one concurrency."""
    found = {
        name: next((p for p in sweep[request][name] if p["connections"] == connections), None)
        for name in (variant, "baseline")
    }
    base, got = found["baseline"], found[variant]
    if base is None or got is None or not base["requests_per_second"]:
        return None
    return float(got["requests_per_second"]) / float(base["requests_per_second"])


def pinning() -> dict[str, Sequence[int] | str]:
    server_cpus, loadgen_cpus = split_cpus()
    return {
        "server_cpus": sorted(server_cpus) if server_cpus else "unpinned",
        "load_generator_cpus": sorted(loadgen_cpus) if loadgen_cpus else "unpinned",
    }
