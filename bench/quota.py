"""Score reads with a usage allowance in force against without, in one run, in one process.

`python -m bench.quota` builds the daemon's app as `bench.request_path` does (real storage, a
strict meter fsyncing its queue, metrics and guards) with one tenant whose score reads are
driven through aiohttp's connection handler over in-memory transports (64 keep-alive
connections), in chunks: in some the tenant has an allowance under the `block` policy, large
enough never to be reached (every read takes the quota check: allowance lookup, spend, hold
and release, the `period` policy in the RateLimit fields, the threshold check), in the
others it has none, and in a third kind the allowance is a fleet's (a node with a central
database: the check also reads the node's lease, edge_node.usage.leases, from memory). The
same tenant, file and caches serve all, in rotating order, so a busy spell on the machine
falls on all alike; chunks without an allowance are also counted apart as a control, whose
ratio to the others shows the noise of the run. Figures: requests/s and event-loop CPU µs per
request of each, and the ratio with the quota over without (requests/s; 1.0 = free).
Rounds repeat that; the median round's ratio is reported.

`--callgrind KIND` (without, with, fleet) serves one kind only and counts it under valgrind,
whose instruction counts the machine's other work does not disturb: run it as
`valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null python -m
bench.quota --callgrind with --requests 2560` and divide the "Collected" figure valgrind
prints by the requests. The lease file is then read again no more often than the run lasts,
since under valgrind 10 ms is a few requests rather than a few hundred.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.in_memory import drive, get_request, repeat, running
from bench.request_path import ITEM

CHUNKS = 12
# Each chunk runs the three tenants in one of these orders, so none is always first or last.
ORDERS = (
    ("without", "with", "fleet", "control"),
    ("with", "fleet", "control", "without"),
    ("fleet", "control", "without", "with"),
    ("control", "without", "with", "fleet"),
)
LABELS = ORDERS[0]


async def seeded(data_dir: Path) -> tuple[Any, Any, Any, str, bytes]:
    """The daemon's app with one tenant: (app, storage, meter, tenant id, its score read)."""
    from edge_node.config import load_config  # noqa: PLC0415
    from edge_node.http.app import NodeStorage, create_app  # noqa: PLC0415
    from edge_node.usage.meter import open_meter  # noqa: PLC0415

    config = load_config(environ={"EDGE_NODE_DATA_DIR": str(data_dir)})
    storage = NodeStorage.open(config)
    tenant, key = storage.registry.create_tenant("bench", rate_limit_per_minute=10**9)
    request = get_request(f"/v1/tenants/{tenant.tenant_id}/items/{ITEM}/score", key.api_key)
    meter = await open_meter(config.meter, config.queue, data_dir / "queue" / "worker-0", "bench")
    return create_app(config, storage, meter), storage, meter, tenant.tenant_id, request


def fleet_lease(data_dir: Path, tenant_id: str, refresh_seconds: float = 0.01) -> Any:
    """A LeaseBook holding a lease of the tenant's allowance too large to be spent, as the
    sync worker writes it for a node with a central database."""
    from edge_node.clock import now_ms  # noqa: PLC0415
    from edge_node.usage import leases  # noqa: PLC0415
    from edge_node.usage.quotas import calendar_month  # noqa: PLC0415

    conn = leases.open_leases(data_dir)
    start_ms, _ = calendar_month(now_ms())
    far = leases.boottime_ns() + 10**15
    lease = leases.Lease(
        tenant_id, start_ms, 10**12, 10**12, 0, 0, False, far, leases.boot_id(), False, 0
    )
    leases.write_leases(conn, [lease])
    conn.close()
    return leases.LeaseBook(data_dir, refresh_seconds=refresh_seconds)


async def one_round(count: int, connections: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edge-node-quota-bench-") as scratch:
        app, storage, meter, tenant_id, request = await seeded(Path(scratch))
        from edge_node.admission.router import ROUTER_KEY  # noqa: PLC0415

        router = app[ROUTER_KEY]
        book = fleet_lease(Path(scratch), tenant_id)
        wall = dict.fromkeys(LABELS, 0.0)
        cpu = dict.fromkeys(LABELS, 0.0)
        failures = 0
        try:
            async with running(app) as server:
                await drive(server, repeat(request), connections, count // 10)  # warm-up
                for chunk in range(CHUNKS):
                    for label in ORDERS[chunk % len(ORDERS)]:
                        limited = label in ("with", "fleet")
                        quota = (10**12, "block") if limited else (None, None)
                        storage.registry.set_quota(tenant_id, *quota)  # read at once
                        router.leases = book if label == "fleet" else None
                        figures = await drive(server, repeat(request), connections, count // CHUNKS)
                        wall[label] += figures["wall_us"] / CHUNKS
                        cpu[label] += figures["cpu_us"] / CHUNKS
                        failures += figures["failures"]
        finally:
            await meter.close()
            storage.close()
            book.close()
    return {
        "without_rps": 1e6 / wall["without"],
        "with_rps": 1e6 / wall["with"],
        "without_cpu_us": cpu["without"],
        "with_cpu_us": cpu["with"],
        "fleet_rps": 1e6 / wall["fleet"],
        "fleet_cpu_us": cpu["fleet"],
        "ratio_rps": wall["without"] / wall["with"],
        "ratio_cpu": cpu["without"] / cpu["with"],
        "fleet_ratio_rps": wall["without"] / wall["fleet"],
        "fleet_ratio_cpu": cpu["without"] / cpu["fleet"],
        "control_rps": wall["without"] / wall["control"],
        "control_cpu": cpu["without"] / cpu["control"],
        "failures": failures,
    }


async def counted(kind: str, count: int, connections: int) -> None:
    """Serve `kind` only, with valgrind's instruction counting on for `count` requests."""
    with tempfile.TemporaryDirectory(prefix="edge-node-quota-bench-") as scratch:
        app, storage, meter, tenant_id, request = await seeded(Path(scratch))
        from edge_node.admission.router import ROUTER_KEY  # noqa: PLC0415

        book = fleet_lease(Path(scratch), tenant_id, refresh_seconds=10**6)  # see the docstring
        limited = kind in ("with", "fleet")
        storage.registry.set_quota(tenant_id, *((10**12, "block") if limited else (None, None)))
        app[ROUTER_KEY].leases = book if kind == "fleet" else None
        try:
            async with running(app) as server:
                await drive(server, repeat(request), connections, count // 4)  # warm-up
                _callgrind("--instr=on")
                await drive(server, repeat(request), connections, count)
                _callgrind("--instr=off")
        finally:
            await meter.close()
            storage.close()
            book.close()


def _callgrind(switch: str) -> None:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    subprocess.run(["callgrind_control", switch, str(os.getpid())], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per tenant and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--callgrind", choices=("without", "with", "fleet"), help="count one kind under valgrind"
    )
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415

    if args.callgrind:
        uvloop.run(counted(args.callgrind, args.requests, args.connections))
        return

    rounds = []
    for _ in range(args.rounds):
        figures = uvloop.run(one_round(args.requests, args.connections))
        print(f"round: {figures}", file=sys.stderr)
        rounds.append(figures)
    median = sorted(rounds, key=lambda r: r["ratio_rps"])[len(rounds) // 2]
    print(
        f"{args.requests} score reads per tenant over {args.connections} connections,"
        f" median of {args.rounds} rounds"
    )
    print("| | requests/s | loop CPU µs/req |")
    print("|---|---|---|")
    print(
        f"| without an allowance | {median['without_rps']:.0f} | {median['without_cpu_us']:.1f} |"
    )
    print(f"| with an allowance (block) | {median['with_rps']:.0f} | {median['with_cpu_us']:.1f} |")
    print(
        f"| with a fleet-wide allowance (a lease) | {median['fleet_rps']:.0f} |"
        f" {median['fleet_cpu_us']:.1f} |"
    )
    print(
        f"ratio with/without: requests/s {median['ratio_rps']:.3f},"
        f" CPU {median['ratio_cpu']:.3f}; all rounds (requests/s):"
        f" {statistics.median(r['ratio_rps'] for r in rounds):.3f} median,"
        f" {min(r['ratio_rps'] for r in rounds):.3f}-{max(r['ratio_rps'] for r in rounds):.3f};"
        f" failures {sum(r['failures'] for r in rounds)}"
    )
    fleet = sorted(r["fleet_ratio_rps"] for r in rounds)
    print(
        f"fleet-wide over without: requests/s {statistics.median(fleet):.3f} median"
        f" ({fleet[0]:.3f}-{fleet[-1]:.3f}), CPU"
        f" {statistics.median(r['fleet_ratio_cpu'] for r in rounds):.3f} median"
    )
    print(
        "control (a second tenant without an allowance, over the first): requests/s"
        f" {median['control_rps']:.3f}, CPU {median['control_cpu']:.3f}: the noise of the run"
    )


if __name__ == "__main__":
    main()
