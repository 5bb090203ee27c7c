"""The chaos run: a cluster under load, fault schedules one after another, the checker after
each, and the figures at the end.

    python -m tests.system.chaos --rounds 10 --duration 60
    make chaos ROUNDS=10 DURATION=60                          # the same
    python -m tests.system.chaos --keep /var/tmp/chaos ...    # stop at the first failure

`--keep DIR` runs the cluster in DIR (which must not exist) and leaves it there: the nodes'
data directories and logs, and, should a schedule fail, the stand-in's state and meter
events as JSON beside them; the run then stops at that schedule.

Each round runs every schedule named by `--schedules` (all by default) for `--duration`
seconds with the load running, then stops the load and runs the checker. The exit status is
0 when every check of every round held, 1 otherwise. The test suite runs a short one
(tests/system/test_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.postgres import PostgresServer, start_server
from tests.system.checker import Verdict, check
from tests.system.cluster import Cluster, environment_summary
from tests.system.faults import SCHEDULES, FaultContext, run_schedule
from tests.system.record import Observations
from tests.system.traffic import TenantClients, Traffic, create_tenants

REGISTRY_TIMEOUT_SECONDS = 60.0


@dataclass
class ChaosSettings:
    rounds: int = 1
    duration: float = 20.0
    schedules: Sequence[str] = tuple(SCHEDULES)
    rate: float = 60.0  # requests per second, all clients together
    tenants: int = 3
    seed: int = 1
    bound: float = 60.0  # seconds the cluster may take to settle after a schedule
    clock_jump: float = 90.0
    stop_on_failure: bool = False  # and leave the stand-in's evidence in the root


@dataclass
class ChaosReport:
    verdicts: list[Verdict] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def slowest_convergence(self) -> float | None:
        settled = [v.converged_after for v in self.verdicts if v.converged_after is not None]
        return max(settled) if len(settled) == len(self.verdicts) and settled else None

    def summary(self) -> str:
        slowest = self.slowest_convergence
        return (
            f"chaos: {len(self.verdicts)} schedules in {self.seconds:.0f} s,"
            f" {'all checks held' if self.ok else 'CHECKS FAILED'};"
            f" faults {dict(sorted(self.faults.items()))};"
            f" slowest convergence {'none' if slowest is None else f'{slowest:.1f} s'}"
        )


async def run_chaos(
    root: Path,
    postgres: PostgresServer,
    settings: ChaosSettings,
    *,
    emit: Callable[[str], None] = print,
) -> ChaosReport:
    started = time.monotonic()
    report = ChaosReport()
    cluster = await Cluster.start(root, postgres)
    traffic: Traffic | None = None
    try:
        tenants = await create_tenants(cluster, settings.tenants)
        await cluster.start_daemons()
        await wait_for_registry(cluster, tenants)
        traffic = Traffic(cluster, tenants, Observations(), rate=settings.rate, seed=settings.seed)
        await traffic.open()
        ctx = FaultContext(
            cluster, traffic, random.Random(settings.seed), settings.clock_jump, report.faults
        )
        emit(f"chaos: 3 edge nodes, {settings.tenants} tenants, {environment_summary()}")
        runs = [(n, name) for n in range(1, settings.rounds + 1) for name in settings.schedules]
        for round_number, name in runs:
            verdict = await _one_schedule(ctx, name, settings)
            verdict.schedule = f"round {round_number} {name}"
            report.verdicts.append(verdict)
            for line in verdict.lines():
                emit(line)
            if not verdict.ok and settings.stop_on_failure:
                await _keep_evidence(cluster, root)
                emit(f"chaos: stopped at the first failure; the cluster is kept in {root}")
                break
    finally:
        if traffic is not None:
            await traffic.close()
        await cluster.close()
    report.seconds = time.monotonic() - started
    emit(report.summary())
    return report


async def _keep_evidence(cluster: Cluster, root: Path) -> None:
    """The stand-in's objects and accepted meter events, which die with its process."""
    (root / "standin-state.json").write_text(json.dumps(await cluster.standin_state()))
    (root / "standin-meter-events.json").write_text(
        json.dumps(await cluster.standin_meter_events())
    )


async def _one_schedule(ctx: FaultContext, name: str, settings: ChaosSettings) -> Verdict:
    violations_from = len(ctx.traffic.seen.violations)
    stop = asyncio.Event()
    load = asyncio.create_task(ctx.traffic.run(stop))
    try:
        await run_schedule(ctx, name, settings.duration)
    finally:
        faults_stopped_at = time.monotonic()
        stop.set()
        await load
    verdict = await check(
        ctx.cluster,
        ctx.traffic,
        name,
        faults_stopped_at=faults_stopped_at,
        bound=settings.bound,
        violations_from=violations_from,
    )
    if verdict.converged_after is not None:
        ctx.traffic.promote_keys()
    return verdict


async def wait_for_registry(cluster: Cluster, tenants: list[TenantClients]) -> None:
    """Until every node holds every tenant's keys (they travel through PostgreSQL)."""
    wanted = {key.key_id for tenant in tenants for key in tenant.keys}
    deadline = time.monotonic() + REGISTRY_TIMEOUT_SECONDS
    while True:
        missing = []
        for node in cluster.nodes:
            with node.node_db() as conn:
                held = {row[0] for row in conn.execute("SELECT key_id FROM api_keys")}
            if wanted - held:
                missing.append(node.node_id)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the tenants' keys never reached {missing}")
        await asyncio.sleep(0.2)


def parse_args(argv: Sequence[str] | None) -> tuple[ChaosSettings, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m tests.system.chaos", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per schedule")
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated")
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--bound", type=float, default=60.0, help="convergence bound, s")
    parser.add_argument(
        "--keep", type=Path, help="run in this new directory, keep it, stop at a failure"
    )
    args = parser.parse_args(argv)
    schedules = [name for name in args.schedules.split(",") if name]
    unknown = [name for name in schedules if name not in SCHEDULES]
    if unknown:
        parser.error(f"unknown schedules {unknown}; known: {', '.join(SCHEDULES)}")
    return ChaosSettings(
        rounds=args.rounds,
        duration=args.duration,
        schedules=schedules,
        rate=args.rate,
        seed=args.seed,
        bound=args.bound,
        stop_on_failure=args.keep is not None,
    ), args.keep


def main(argv: Sequence[str] | None = None) -> int:
    settings, keep = parse_args(argv)
    print(f"chaos: seed {settings.seed}", flush=True)
    postgres = start_server()
    try:
        with contextlib.ExitStack() as stack:
            if keep is None:
                root = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-node-chaos-"))
                )
            else:
                keep.mkdir(parents=True)
                root = keep
            report = asyncio.run(
                run_chaos(root, postgres, settings, emit=lambda s: print(s, flush=True))
            )
    finally:
        postgres.stop()
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
