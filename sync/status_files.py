"""The sync worker's health as another process of the node reads it: from its status files.

With `serve --workers N` the sync worker runs in the supervisor, which serves no HTTP. Each
worker hands a `SyncStatusFiles` to its metrics in place of the sync worker itself: at scrape
time it reads `sync-status.json` (the shards, sync/status.py) and `sync-jobs.json` (the
Stripe jobs, sync/job_status_file.py), which the supervisor rewrites as they change, and
gives back the same status objects the sync worker keeps in memory.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync.billing.stats import BillingStats
from sync.job_status_file import FILE_NAME as JOBS_FILE
from sync.job_status_file import JOB_TIME_FIELDS, read_jobs_file
from sync.jobs import JobStatus
from sync.status import SHARD_TIME_FIELDS, ShardStatus, read_status_file

_SHARD_FIELDS = frozenset(f.name for f in dataclasses.fields(ShardStatus))
_JOB_FIELDS = frozenset(f.name for f in dataclasses.fields(JobStatus))


_FLUSH_FIELDS = frozenset(f.name for f in dataclasses.fields(BillingStats))


class SyncStatusFiles:
    """What the sync worker of this data directory last published, as status objects."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._jobs: tuple[tuple[int, int, int], dict[str, Any] | None] | None = None

    def status(self) -> list[ShardStatus]:
        document = read_status_file(self.data_dir)
        if document is None:
            return []
        written_at = parse_us(document["written_at"])
        return [_shard(shard, written_at) for shard in document["shards"]]

    def job_status(self) -> list[JobStatus]:
        document = self._jobs_document()
        if document is None:
            return []
        return [_job(job) for job in document["jobs"]]

    def usage_flush(self) -> list[BillingStats]:
        """The usage flushes' counters summed over every queue the supervisor flushes, or
        none when no flush has published any; a counter the file lacks reads as 0."""
        document = self._jobs_document()
        totals = {} if document is None else document.get("usage_flush") or {}
        if not totals:
            return []
        return [BillingStats(**{k: v for k, v in totals.items() if k in _FLUSH_FIELDS})]

    def _jobs_document(self) -> dict[str, Any] | None:
        """The jobs file, parsed again only once it was replaced (a scrape asks for it twice:
        the jobs, then the usage flush's counters)."""
        try:
            stat = (self.data_dir / JOBS_FILE).stat()
        except FileNotFoundError:
            return None
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._jobs is None or self._jobs[0] != version:
            self._jobs = (version, read_jobs_file(self.data_dir))
        return self._jobs[1]


def parse_us(text: str) -> int:
    """Microseconds since the epoch of a time written by edge_node.clock.format_us."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _shard(document: dict[str, Any], written_at: int) -> ShardStatus:
    values = {key: value for key, value in document.items() if key in _SHARD_FIELDS}
    for name in SHARD_TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = parse_us(values[name])
    age = document.get("oldest_pending_age_seconds")
    values["oldest_pending_at"] = None if age is None else written_at - round(age * 1e6)
    return ShardStatus(**values)


def _job(document: dict[str, Any]) -> JobStatus:
    values = {key: value for key, value in document.items() if key in _JOB_FIELDS}
    for name in JOB_TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = parse_us(values[name])
    return JobStatus(**values)
