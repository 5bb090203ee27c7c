"""Crash rounds by hand: SIGKILL the real daemon under load many times, checking billing each time.

    python -m bench.crash --rounds 1000 [--data-dir D] [--seed S]

Each round is one round of tests/usage/test_crash_metering.py (tests/crash_harness.py): start
`edge-node serve` on the same data directory, load it over HTTP on 127.0.0.1, SIGKILL it
20-400 ms in, and check the queue and the tenant's SQLite file against everything any round
acknowledged. A line every 50 rounds, a summary at the end; the exit status is 1 if any
promise was broken. Ctrl-C stops after killing the running daemon and still prints the
summary. The data directory (a temporary one unless --data-dir) is deleted after a clean
run and kept, with the daemons' stderr beside it, when there is something to look at.
docs/durability.md says what is checked and why.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.crash_harness import CrashRun, HarnessError, RoundReport, Violation, describe

PROGRESS_EVERY = 50
DESCRIPTION = "SIGKILL the real daemon under load many times, checking billing each time."


@dataclass
class Totals:
    """What the run has done so far; violations are kept once each, as first seen."""

    started: float = field(default_factory=time.monotonic)
    rounds: int = 0
    kills: int = 0
    sent: int = 0
    acknowledged: int = 0
    idle_rounds: int = 0  # rounds killed before any request was acknowledged
    events: int = 0
    rereads: int = 0  # rounds whose queue bytes read before had changed (a torn tail cut)
    statuses: Counter[int] = field(default_factory=Counter)
    violations: dict[tuple[str, str], Violation] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # distinct edge_node/ fingerprints seen
    error: str | None = None

    def add(self, report: RoundReport) -> list[Violation]:
        """Count a round in; return the violations not seen in earlier rounds."""
        self.rounds += 1
        self.kills += report.killed
        self.sent += report.sent
        self.acknowledged += report.acknowledged
        self.idle_rounds += report.acknowledged == 0
        self.events = report.events
        self.statuses.update(report.statuses)
        if report.source not in self.sources:
            self.sources.append(report.source)
        new = [v for v in report.violations if (v.kind, v.subject) not in self.violations]
        self.violations.update({(v.kind, v.subject): v for v in new})
        return new

    @property
    def wall_seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        return (
            f"rounds {self.rounds}, kills {self.kills}, acknowledged {self.acknowledged}"
            f" of {self.sent} sent, events {self.events}, violations {len(self.violations)},"
            f" {self.wall_seconds:.1f} s"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=DESCRIPTION)
    parser.add_argument("--rounds", type=int, default=1000, help="how many kills (default 1000)")
    parser.add_argument("--data-dir", type=Path, help="an empty or new directory (default: temp)")
    parser.add_argument(
        "--seed", type=int, help="seed for load mix and kill times (default: random)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


async def run(rounds: int, data_dir: Path, seed: int, totals: Totals) -> None:
    """Run the rounds, stopping at the first one that finds a broken promise."""
    crash = await CrashRun.create(data_dir, seed=seed, log_path=daemon_log(data_dir))
    try:
        for _ in range(rounds):
            report = await crash.round()
            sources = len(totals.sources)
            new = totals.add(report)
            totals.rereads = crash.queue.rereads
            if new or len(totals.sources) > sources > 0:
                print(describe(report), f"(edge_node/ source {report.source})", flush=True)
            for violation in new:
                print(f"  VIOLATION {violation.kind} {violation.subject}: {violation.evidence}")
            if totals.rounds % PROGRESS_EVERY == 0:
                print(totals.line(), flush=True)
            if new:
                return
    finally:
        crash.close()


def daemon_log(data_dir: Path) -> Path:
    return data_dir.with_name(f"{data_dir.name}.daemon.log")


def summary(totals: Totals, seed: int, data_dir: Path, interrupted: bool) -> str:
    statuses = ", ".join(f"{code or 'none'}: {n}" for code, n in sorted(totals.statuses.items()))
    versions = {version for source in totals.sources for version in source.split("->")}
    changed = "no" if len(versions) <= 1 else f"YES, {len(versions)} versions"
    return "\n".join(
        [
            f"crash summary{' (interrupted)' if interrupted else ''}: {totals.line()}",
            f"  rounds {totals.rounds}, SIGKILLs {totals.kills} ({totals.idle_rounds} before any"
            f" acknowledgement), requests sent {totals.sent} [{statuses}]",
            f"  acknowledged requests {totals.acknowledged}, usage events in the queue"
            f" {totals.events} (queue re-read from scratch {totals.rereads} times), violations"
            f" {len(totals.violations)}, wall time"
            f" {totals.wall_seconds:.1f} s",
            f"  seed {seed}, data dir {data_dir}, edge_node/ changed during the run: {changed}",
            *([f"  error: {totals.error}"] if totals.error else []),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    temporary = args.data_dir is None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="edge-node-crash-")) / "var"
    print(f"crash: {args.rounds} rounds, seed {seed}, data dir {data_dir}", flush=True)
    totals, interrupted = Totals(), False
    try:
        asyncio.run(run(args.rounds, data_dir, seed, totals))
    except KeyboardInterrupt:
        interrupted = True
    except HarnessError as exc:
        totals.error = str(exc)
    except Exception as exc:  # still print what was done, and keep the evidence
        totals.error = f"{type(exc).__name__}: {exc}"
    print(summary(totals, seed, data_dir, interrupted), flush=True)
    clean = not totals.violations and totals.error is None
    if temporary and clean:
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    elif not clean:
        print(f"kept for inspection: {data_dir} and {daemon_log(data_dir)}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
