"""Measuring HTTP scenarios: warm up, drive the load generator, read the server's CPU share.

`run_scenarios` starts each scenario's server once (bench/servers.py), on the server CPU,
and measures every scenario once per round with the load generator on the other CPUs.
"""

from __future__ import annotations

import functools
import itertools
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.loadgen import RUNNERS, GeneratorName, Measurement, Target
from bench.processes import cpu_seconds, split_cpus
from bench.scenarios import Scenario
from bench.servers import Server, ServerPool, log_tail


@dataclass(frozen=True)
class Settings:
    """How long and how hard each scenario is measured, by which load generator."""

    seconds: int
    warmup: int
    connections: int
    generator: GeneratorName
    rounds: int = 1


def measure(
    scenario: Scenario, server: Server, settings: Settings, cpus: set[int] | None
) -> Measurement:
    """Warm up, then measure; an error if the server died while it was being measured."""
    headers = dict(server.credit_headers if scenario.credits else server.headers)
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
