"""The sync worker: one loop per shard, running a round (sync/replication/rounds.py) every sync
interval.

A shard that fails is retried with capped exponential backoff and jitter (sync/backoff.py),
whatever failed: PostgreSQL unreachable, slow (every statement has a timeout), a connection
dropped mid-batch, a local SQLite error, even a bug. Nothing waits for a local write: the loop
keeps trying by itself, so the outbox drains as soon as the database answers again. Shards are
independent: one down does not delay the others; within a shard, one tenant failing on its
own is retried on its own (sync/replication/tenant_failures.py). `status()`, `snapshot()` and the
status file (sync/status.py) show each shard's last success, last error, failures and lag.

Beside the shards the worker runs periodic jobs (sync/jobs.py: Stripe provisioning, the usage
flush), each in its own loop with the same backoff; `job_status()` shows them. With no DSNs
and some jobs (Stripe configured, no PostgreSQL) only the jobs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_node.clock import now_us
from edge_node.config import CentralConfig
from edge_node.errors import ConfigError, SyncError
from sync.backoff import Backoff
from sync.job_status_file import JobStatusPublisher, usage_flush_totals
from sync.jobs import JobStatus, PeriodicJob, run_periodically
from sync.postgres import check_dsn, close_quietly, connect, redact_dsn
from sync.replication.round_values import EdgeStorage, RoundReport
from sync.replication.rounds import ShardRound
from sync.replication.set_aside import FILE_NAME as SET_ASIDE_FILE
from sync.replication.set_aside import SetAsideLog
from sync.replication.tenant_failures import TenantFailures
from sync.shards import shard_for
from sync.status import ShardStatus, SyncSnapshot, write_status_file

if TYPE_CHECKING:
    from sync.postgres import Connection

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_SECONDS = 10.0
STATEMENT_TIMEOUT_SECONDS = 60.0
BOUND_HISTORY = 10_000  # rounds of durable bounds kept to date the download horizon


@dataclass
class _Shard:
    """One shard's connection and health, owned by its loop."""

    index: int
    dsn: str
    status: ShardStatus
    connection: Connection | None = None
    standby_dsn: str = ""  # downloads read from this hot standby (central.standby_dsns)
    standby: Connection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: TenantFailures = field(default_factory=TenantFailures)
    # (durable bound, when it was recorded) of recent rounds: a horizon at or past a bound
    # means every change committed before that moment has been downloaded.
    bounds: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=BOUND_HISTORY))


class SyncWorker:
    """Syncs this node with every shard of the central database until stopped."""

    def __init__(
        self,
        central: CentralConfig,
        edge: EdgeStorage,
        *,
        node_id: str,
        data_dir: Path,
        backoff: Backoff | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
        jobs: Sequence[PeriodicJob] = (),
    ) -> None:
        self._central = central
        self._edge = edge
        self._node_id = node_id
        self._data_dir = data_dir
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        standbys = _standby_dsns(central)
        self._set_aside = SetAsideLog(data_dir / SET_ASIDE_FILE)
        self._shards = [
            _Shard(
                i,
                dsn,
                ShardStatus(i, redact_dsn(dsn)),
                standby_dsn=standby,
                failures=TenantFailures(self._backoff),
            )
            for i, (dsn, standby) in enumerate(zip(central.dsns, standbys, strict=True))
        ]
        self._jobs = [(job, JobStatus(job.name)) for job in jobs]
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._job_publisher = JobStatusPublisher(
            data_dir, node_id, self.job_status, self.usage_flush_totals
        )

    def status(self) -> list[ShardStatus]:
        """A snapshot of every shard's status."""
        return [replace(shard.status) for shard in self._shards]

    def snapshot(self) -> SyncSnapshot:
        """Every shard's status at this instant, lag included: what metrics export."""
        return SyncSnapshot(self._node_id, now_us(), tuple(self.status()))

    def job_status(self) -> list[JobStatus]:
        """A snapshot of every periodic job's status."""
        return [replace(status) for _, status in self._jobs]

    def usage_flush_totals(self) -> dict[str, int]:
        """The usage flush jobs' counters summed, for the jobs file (other processes read it)."""
        stats = [getattr(job, "stats", None) for job, _ in self._jobs]
        return usage_flush_totals([s for s in stats if is_dataclass(s)])

    def start(self) -> None:
        """Start one background loop per shard and one per periodic job."""
        if self._tasks:
            raise RuntimeError("the sync worker is already running")
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._run(shard), name=f"sync-shard-{shard.index}")
            for shard in self._shards
        ] + [
            asyncio.create_task(
                run_periodically(job, status, self._stopping, self._backoff),
                name=f"sync-{job.name}",
            )
            for job, status in self._jobs
        ]
        if self._jobs:
            self._tasks.append(
                asyncio.create_task(self._job_publisher.run(self._stopping), name="sync-jobs-file")
            )

    async def stop(self, grace: float = 5.0) -> None:
        """Let the rounds in progress finish for up to `grace` seconds, cancel the rest, and
        close the connections. Cancelling a round is safe: its upload is rolled back or, if
        the COMMIT made it, sent again as a no-op next time; nothing local is half-written."""
        self._stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        for shard in self._shards:
            if shard.connection is not None:
                await close_quietly(shard.connection)
                shard.connection = None
            if shard.standby is not None:
                await close_quietly(shard.standby)
                shard.standby = None
            shard.status.state = "stopped"
            shard.status.next_attempt_at = None
        for job, status in self._jobs:
            status.state = "stopped"
            await job.close()
        self._publish()
        if self._jobs:
            self._job_publisher.publish()

    async def run_once(self) -> list[RoundReport]:
        """One round on every shard, in order, recorded in the status; errors propagate (for
        tests and tools)."""
        reports = []
        for shard in self._shards:
            reports.append(await self._sync(shard))
            self._succeeded(shard, reports[-1])
            self._measure_lag(shard)
        self._publish()
        return reports

    async def _run(self, shard: _Shard) -> None:
        while not self._stopping.is_set():
            delay = await self._attempt(shard)
            shard.status.next_attempt_at = now_us() + int(delay * 1e6)
            self._publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _attempt(self, shard: _Shard) -> float:
        """One round, never raising; the delay before the next one."""
        shard.status.last_attempt_at = now_us()
        try:
            report = await self._sync(shard)
        except (SyncError, sqlite3.Error) as exc:
            return self._failed(shard, exc)
        except Exception as exc:  # a bug must not end sync for good: report it, retry later
            log.exception("sync round on shard %d failed unexpectedly", shard.index)
            return self._failed(shard, exc)
        finally:
            self._measure_lag(shard)
        return self._succeeded(shard, report)

    def _succeeded(self, shard: _Shard, report: RoundReport) -> float:
        status = shard.status
        status.last_success_at = now_us()
        status.consecutive_failures = 0
        self._date_horizon(shard, report)
        lag = status.horizon_lag_seconds(status.last_success_at) or 0.0
        status.state = "lagging" if lag > self._central.horizon_lag_warning_seconds else "ok"
        status.tenants = report.tenants
        status.standby_lag_seconds = report.standby_lag_seconds
        status.uploaded_rows += report.uploaded
        status.downloaded_rows += report.downloaded
        status.applied_rows += report.applied
        status.registry_uploaded += report.registry_uploaded
        status.registry_applied += report.registry_applied
        status.set_aside_rows += report.set_aside
        if report.set_aside:
            log.error(
                "shard %d refused %d rows for good; they are listed in %s",
                shard.index,
                report.set_aside,
                self._set_aside.path,
            )
        return self._central.sync_interval_seconds

    def _date_horizon(self, shard: _Shard, report: RoundReport) -> None:
        """Date the horizon the rating download reached: the latest recorded bound at or
        below it (when none is, the oldest bound known: the lag is at least that old)."""
        if report.bound is None or report.horizon is None or report.bound_at is None:
            return
        status = shard.status
        shard.bounds.append((report.bound, report.bound_at))
        status.last_download_at = now_us()
        status.horizon_lag_xids = max(0, report.bound - report.horizon)
        while len(shard.bounds) > 1 and shard.bounds[1][0] <= report.horizon:
            shard.bounds.popleft()
        bound, recorded_at = shard.bounds[0]
        if bound <= report.horizon or status.downloaded_through_at is None:
            status.downloaded_through_at = recorded_at

    def _failed(self, shard: _Shard, exc: BaseException) -> float:
        status = shard.status
        status.state = "retrying"
        status.consecutive_failures += 1
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.last_error_at = now_us()
        delay = self._backoff.delay(status.consecutive_failures)
        log.warning(
            "sync with shard %d (%s) failed %d time(s) in a row, retrying in %.1f s: %s",
            shard.index,
            status.dsn,
            status.consecutive_failures,
            delay,
            exc,
        )
        return delay

    async def _sync(self, shard: _Shard) -> RoundReport:
        async with shard.lock:
            if shard.connection is None or shard.connection.is_closed():
                shard.connection = await connect(
                    shard.dsn,
                    connect_timeout=self._connect_timeout,
                    command_timeout=self._statement_timeout,
                    lock_timeout=self._central.lock_timeout_seconds,
                )
            connection = shard.connection
            try:
                if shard.standby_dsn and (shard.standby is None or shard.standby.is_closed()):
                    shard.standby = await connect(
                        shard.standby_dsn,
                        connect_timeout=self._connect_timeout,
                        command_timeout=self._statement_timeout,
                    )
                return await ShardRound(
                    connection,
                    shard.index,
                    len(self._shards),
                    self._edge,
                    self._central.batch_size,
                    self._set_aside,
                    shard.failures,
                    reader=shard.standby,
                ).run()
            except BaseException:
                # The connections may be dead or inside a failed transaction: start afresh.
                connection.terminate()
                shard.connection = None
                if shard.standby is not None:
                    shard.standby.terminate()
                    shard.standby = None
                raise

    def _measure_lag(self, shard: _Shard) -> None:
        """Outbox lag of the shard's tenants, read locally: visible while the shard is down.
        Only the tenants listed as pending upload are opened."""
        shard.status.failing_tenants = len(shard.failures.failing)
        shard.status.tenant_failures = shard.failures.total
        shard.status.last_tenant_error = shard.failures.last_error
        pending, oldest = 0, None
        try:
            for tenant_id in self._edge.stores.pending_tenants():
                if shard_for(tenant_id, len(self._shards)) != shard.index:
                    continue
                rows, _ = self._edge.stores.get(tenant_id).pending_changes(1)
                if rows:
                    pending += 1
                    oldest = (
                        rows[0].updated_at if oldest is None else min(oldest, rows[0].updated_at)
                    )
        except sqlite3.Error as exc:
            log.warning("cannot measure the outbox lag of shard %d: %s", shard.index, exc)
            return
        shard.status.pending_tenants = pending
        shard.status.oldest_pending_at = oldest

    def _publish(self) -> None:
        try:
            write_status_file(self._data_dir, self._node_id, self.status(), now_us())
        except OSError as exc:
            log.warning("cannot write the sync status file: %s", exc)


def _standby_dsns(central: CentralConfig) -> tuple[str, ...]:
    """One standby DSN per shard ('' for none); ConfigError now, at start-up, rather than a
    retry loop later."""
    for dsn in central.dsns:
        check_dsn(dsn)
    if not central.standby_dsns:
        return ("",) * len(central.dsns)
    if len(central.standby_dsns) != len(central.dsns):
        raise ConfigError(
            f"central.standby_dsns must name one standby per shard of central.dsns ('' for "
            f"none): {len(central.standby_dsns)} given for {len(central.dsns)} shards"
        )
    for dsn in central.standby_dsns:
        if dsn:
            check_dsn(dsn)
    return central.standby_dsns
