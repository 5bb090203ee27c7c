"""The upgrade record: how the last upgrade (SIGUSR2) went, for `status`, `upgrade` and metrics.

The supervisor of `serve --workers N` writes `upgrade.json` in the data directory when an
upgrade starts and when it ends (completed, or rolled back with the reason), atomically like
the runtime file. It keeps the node's running totals of both outcomes, so every worker can
export them as `edge_node_upgrades_total{outcome}` (read at each scrape, since the supervisor
serves no /metrics) and an alert can fire on a rollback. A node serving as one process
cannot upgrade without a restart: it answers SIGUSR2 with a `refused` record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_node import __version__
from edge_node.cli.runtime_file import write_json_atomically
from edge_node.clock import format_us, now_us

log = logging.getLogger(__name__)

FILE_NAME = "upgrade.json"
UPGRADING, COMPLETED, ROLLED_BACK, REFUSED = "upgrading", "completed", "rolled_back", "refused"
FINISHED = (COMPLETED, ROLLED_BACK, REFUSED)
WAIT_POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class UpgradeRecord:
    """One upgrade: from which generation and version to which, and how it ended.
    Times are microseconds since the epoch; the totals count every upgrade of the node."""

    state: str
    from_generation: int
    to_generation: int
    from_version: str
    started_at: int
    to_version: str | None = None
    finished_at: int | None = None
    reason: str | None = None
    completed_total: int = 0
    rolled_back_total: int = 0

    def finish(self, state: str, *, reason: str | None = None) -> UpgradeRecord:
        """This upgrade ended in `state` now, with the totals counted."""
        return replace(
            self,
            state=state,
            finished_at=now_us(),
            reason=reason,
            completed_total=self.completed_total + (state == COMPLETED),
            rolled_back_total=self.rolled_back_total + (state == ROLLED_BACK),
        )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["started_at"] = format_us(self.started_at)
        document["started_at_us"] = self.started_at
        document["finished_at_us"] = self.finished_at
        if self.finished_at is not None:
            document["finished_at"] = format_us(self.finished_at)
        return document


class UpgradeFile:
    """The upgrade record of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def write(self, record: UpgradeRecord) -> None:
        write_json_atomically(self.path, record.to_json())

    def read(self) -> UpgradeRecord | None:
        """The record on disk, or None when there is none or it cannot be parsed."""
        try:
            document = orjson.loads(self.path.read_bytes())
            document["started_at"] = document.pop("started_at_us")
            document["finished_at"] = document.pop("finished_at_us")
            return UpgradeRecord(**document)
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            return None

    def start(self, from_generation: int, to_generation: int) -> UpgradeRecord:
        """Write and return the record of an upgrade starting now, carrying the totals on."""
        previous = self.read()
        record = UpgradeRecord(
            state=UPGRADING,
            from_generation=from_generation,
            to_generation=to_generation,
            from_version=__version__ if previous is None else _serving_version(previous),
            started_at=now_us(),
            completed_total=0 if previous is None else previous.completed_total,
            rolled_back_total=0 if previous is None else previous.rolled_back_total,
        )
        self.write(record)
        return record


def _serving_version(previous: UpgradeRecord) -> str:
    """The version the workers run after `previous`: its target if it completed."""
    if previous.state == COMPLETED and previous.to_version is not None:
        return previous.to_version
    return previous.from_version


class UpgradeCollector(Collector):
    """`edge_node_upgrades_total{outcome}` from the data directory's upgrade record."""

    def __init__(self, data_dir: Path) -> None:
        self._file = UpgradeFile(data_dir)

    def collect(self) -> Iterator[Metric]:
        record = self._file.read()
        family = CounterMetricFamily(
            "edge_node_upgrades",
            "Upgrades of the serving workers (SIGUSR2, edge-node upgrade), by outcome.",
            labels=["outcome"],
        )
        family.add_metric(["completed"], 0 if record is None else record.completed_total)
        family.add_metric(["rolled_back"], 0 if record is None else record.rolled_back_total)
        yield family


def refuse_upgrades(data_dir: Path) -> None:
    """In a node serving as one process: answer SIGUSR2 (which would otherwise end it) with
    a `refused` record and a log line saying what to do instead."""

    def refuse() -> None:
        reason = (
            "this node serves as one process: an upgrade without a restart needs"
            " serve --workers N (2 or more), a supervisor over its workers"
        )
        log.error("upgrade refused: %s", reason)
        upgrade = UpgradeFile(data_dir)
        upgrade.write(upgrade.start(0, 0).finish(REFUSED, reason=reason))

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, refuse)


def under_way(data_dir: Path, serving_since: int) -> UpgradeRecord | None:
    """The upgrade the serving process (started at `serving_since`) is running, if any; one
    left unfinished by a process since stopped is not."""
    record = UpgradeFile(data_dir).read()
    if record is not None and record.state == UPGRADING and record.started_at >= serving_since:
        return record
    return None


def request_upgrade(data_dir: Path, pid: int, wait_seconds: float) -> UpgradeRecord | None:
    """Send SIGUSR2 to the serving process `pid` and wait for the upgrade it starts to end;
    None if it has not ended within `wait_seconds`. Waiting tells a terminal how it goes."""
    upgrade = UpgradeFile(data_dir)
    sent_at = now_us()
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + wait_seconds
    shown = None
    while time.monotonic() < deadline:
        record = upgrade.read()
        if record is not None and record.started_at >= sent_at:
            if record.state in FINISHED:
                return record
            if shown != record.state and sys.stderr.isatty():
                print(f"upgrading to generation {record.to_generation}...", file=sys.stderr)
                shown = record.state
        time.sleep(WAIT_POLL_SECONDS)
    return None
