"""`python -m bench.report`: run every benchmark once and write the performance report.

Runs on 127.0.0.1 only, each benchmark ending by itself; a benchmark that fails is named in
the report with its error and the others still run. About 10 minutes on 2 cores; --quick
(shorter runs, fewer points) about 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import GeneratorName, choose_generator, wrk_version
from bench.measure import Settings
from bench.report.suite import BENCHMARKS, Scale, Section
from bench.report.sweep import SweepSettings, run_sweep
from bench.report.write import write_report
from bench.summary import machine

DEFAULT_OUT = Path("docs/performance")
FULL_CONNECTIONS = (1, 4, 16, 64, 256)
QUICK_CONNECTIONS = (1, 16, 64)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory written")
    parser.add_argument("--quick", action="store_true", help="short runs, fewer points")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    names = ", ".join(["sweep", *BENCHMARKS])
    parser.add_argument("--only", help=f"comma-separated subset of: {names}")
    parser.add_argument(
        "--against", help="a git revision the in-process request-path benchmark also measures"
    )
    parser.add_argument(
        "--rewrite", action="store_true", help="measure nothing: write OUT/results.json again"
    )
    return parser.parse_args(argv)


def machine_info(generator: GeneratorName) -> dict[str, Any]:
    """bench.summary's description of the machine, with memory, kernel and SQLite added."""
    info = machine(Settings(1, 0, 1, generator), wrk_version())
    meminfo = Path("/proc/meminfo")
    total_kb = (
        next(
            (
                int(line.split()[1])
                for line in meminfo.read_text().splitlines()
                if line.startswith("MemTotal:")
            ),
            0,
        )
        if meminfo.exists()
        else 0
    )
    return {
        **info,
        "memory": f"{total_kb / 1024**2:.1f} GiB" if total_kb else "unknown",
        "kernel": f"{platform.system()} {platform.release()}",
        "sqlite": sqlite3.sqlite_version,
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_suite(names: Sequence[str], scale: Scale) -> list[Section]:
    """Each named benchmark in turn; one that fails becomes a section naming its error."""
    sections = []
    for name in names:
        print(f"report: {name}", file=sys.stderr)
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                found = BENCHMARKS[name](scale)
        except Exception as exc:  # the report still shows the others
            found = {"title": name, "error": f"{type(exc).__name__}: {exc}"}
        print(f"report: {name} took {time.monotonic() - started:.0f} s", file=sys.stderr)
        sections.append(found)
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rewrite:
        readme, _ = write_report(json.loads((args.out / "results.json").read_text()), args.out)
        print(f"bench.report: wrote {readme} again from {args.out / 'results.json'}")
        return 0
    wanted = (args.only or ",".join(["sweep", *BENCHMARKS])).split(",")
    unknown = set(wanted) - {"sweep", *BENCHMARKS}
    if unknown:
        raise SystemExit(f"bench.report: unknown benchmarks {sorted(unknown)}")
    generator = choose_generator(args.loadgen, wrk_version())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally clauses stop servers
    started, load_before = time.monotonic(), load_average()
    sweep = SweepSettings(
        QUICK_CONNECTIONS if args.quick else FULL_CONNECTIONS,
        2 if args.quick else 8,
        1 if args.quick else 2,
        generator,
    )
    measured = run_sweep(sweep) if "sweep" in wanted else None
    scale = Scale(generator, quick=args.quick, against=args.against)
    sections = run_suite([name for name in BENCHMARKS if name in wanted], scale)
    command = (
        "python -m bench.report"
        + (" --quick" if args.quick else "")
        + (f" --against {args.against}" if args.against else "")
    )
    results = {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_seconds": round(time.monotonic() - started),
        "settings": {
            "command": command,
            "connections": list(sweep.connections),
            "seconds": sweep.seconds,
            "warmup": sweep.warmup,
        },
        "machine": machine_info(generator),
        "load_before": load_before,
        "load_after": load_average(),
        "sweep": measured,
        "sections": sections,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if measured is None:
        print(f"bench.report: figures in {args.out / 'results.json'}; no sweep, no report")
        return 0
    readme, plots = write_report(results, args.out)
    print(f"bench.report: wrote {readme} and {', '.join(str(p) for p in plots)}")
    return 1 if any("error" in found for found in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
