"""HTTP benchmark: the daemon's score read and rating write, as ratios of a minimal aiohttp app.

`python -m bench.http` (`make bench`) starts, on 127.0.0.1 only, the baseline app
(`bench.minimal_app`) and the real daemon as a user would (`edge-node tenants create`, then
`edge-node serve`), pins the servers to one CPU and the load generator to the others, warms
each scenario up, measures it, prints a Markdown table and writes the same as JSON under
bench/results/. Machines are noisy, so each figure is read against a baseline measured in
the same run. docs/benchmarks.md says how to read it.

Its parts: the scenarios (bench/scenarios.py), their servers (bench/servers.py), measuring
(bench/measure.py) and the table (bench/summary.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import check_template, choose_generator, wrk_version
from bench.measure import Settings, run_scenarios
from bench.scenarios import SCENARIOS, select_scenarios
from bench.summary import machine, markdown, problems, result_row

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
