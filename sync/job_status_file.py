"""The status file of the sync worker's periodic jobs (the Stripe jobs), for `edge-node status`.

The shard loops publish `sync-status.json` (sync/status.py) after every attempt; the jobs
(Stripe provisioning, the usage flush) keep their status in memory, so the worker copies it
to `sync-jobs.json` in the data directory whenever it changed, at most once per
`PUBLISH_INTERVAL_SECONDS`, and once more when it stops. Written to a temporary name, then
renamed: a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from edge_node.clock import format_us, now_us
from sync.jobs import JobStatus
from sync.status import replace_status_document

log = logging.getLogger(__name__)
FILE_NAME = "sync-jobs.json"
PUBLISH_INTERVAL_SECONDS = 1.0
# A job status's moments, written as edge_node.clock.format_us text (parsed back by
# sync/status_files.py).
JOB_TIME_FIELDS = ("last_success_at", "last_error_at")


def job_to_json(status: JobStatus) -> dict[str, Any]:
    document = dataclasses.asdict(status)
    for name in JOB_TIME_FIELDS:
        value = document[name]
        document[name] = None if value is None else format_us(value)
    return document


def usage_flush_totals(stats: Sequence[Any]) -> dict[str, int]:
    """The usage flushes' counters (sync.billing.stats.BillingStats, one per queue), summed;
    taken as dataclasses, so reading the file never loads the Stripe adapter."""
    totals: dict[str, int] = {}
    for item in stats:
        for name, value in dataclasses.asdict(item).items():
            totals[name] = totals.get(name, 0) + value
    return totals


def write_jobs_file(
    data_dir: Path,
    node_id: str,
    jobs: Sequence[JobStatus],
    usage_flush: Mapping[str, int] | None = None,
) -> None:
    """Replace the jobs file atomically (no fsync: it is rewritten while anything changes)."""
    document = {
        "node_id": node_id,
        "pid": os.getpid(),
        "written_at": format_us(now_us()),
        "jobs": [job_to_json(job) for job in jobs],
        "usage_flush": dict(usage_flush or {}),
    }
    replace_status_document(data_dir / FILE_NAME, document)


def read_jobs_file(data_dir: Path) -> dict[str, Any] | None:
    """The last jobs status the daemon wrote, or None when it never wrote one."""
    try:
        document: dict[str, Any] = orjson.loads((data_dir / FILE_NAME).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return document


class JobStatusPublisher:
    """Copies the jobs' in-memory status to the jobs file when it changes."""

    def __init__(
        self,
        data_dir: Path,
        node_id: str,
        snapshot: Callable[[], list[JobStatus]],
        usage_flush: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self._data_dir = data_dir
        self._node_id = node_id
        self._snapshot = snapshot
        self._usage_flush = usage_flush
        self._published: tuple[list[JobStatus], dict[str, int]] | None = None

    def publish(self) -> None:
        """Write the file if the status differs from what was last written."""
        current = (self._snapshot(), self._usage_flush())
        if current == self._published:
            return
        try:
            write_jobs_file(self._data_dir, self._node_id, *current)
        except OSError as exc:
            log.warning("cannot write the sync jobs status file: %s", exc)
            return
        self._published = current

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish every `PUBLISH_INTERVAL_SECONDS` until `stopping` is set."""
        while not stopping.is_set():
            self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=PUBLISH_INTERVAL_SECONDS)
