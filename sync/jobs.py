"""Periodic jobs the sync worker runs beside its shard loops (Stripe provisioning, usage flush).

A job is anything with a `name`, an `interval`, `run()` and `close()`. The worker runs each in
its own loop: `run()` every `interval` seconds while it succeeds; after a failure, whatever it
was, again after capped exponential backoff with jitter (sync/backoff.py), or after the
server's Retry-After hint when that is longer. A job never ends the loop by failing, so it
resumes by itself once Stripe (or whatever it talks to) answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import Literal, Protocol

from edge_node.clock import now_us
from edge_node.errors import ConfigError, SyncError, TransientSyncError
from sync.backoff import Backoff

log = logging.getLogger(__name__)
JobState = Literal["starting", "ok", "retrying", "stopped"]


class PeriodicJob(Protocol):
    """One unit of background work, run again and again."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> float: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class JobStatus:
    """A job's health. Times are microseconds since the epoch."""

    name: str
    state: JobState = "starting"
    last_success_at: int | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    consecutive_failures: int = 0


async def run_periodically(
    job: PeriodicJob, status: JobStatus, stopping: asyncio.Event, backoff: Backoff
) -> None:
    """Run `job` until `stopping` is set, recording each attempt in `status`."""
    while not stopping.is_set():
        delay = await _attempt(job, status, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
    status.state = "stopped"


async def _attempt(job: PeriodicJob, status: JobStatus, backoff: Backoff) -> float:
    """One run, never raising; the delay before the next one."""
    try:
        await job.run()
    except (SyncError, ConfigError, sqlite3.Error) as exc:  # expected: no traceback
        return _failed(job, status, exc, backoff)
    except Exception as exc:  # a bug must not end the job for good: report it, retry later
        log.exception("sync job %s failed unexpectedly", job.name)
        return _failed(job, status, exc, backoff)
    status.state = "ok"
    status.last_success_at = now_us()
    status.consecutive_failures = 0
    return job.interval


def _failed(job: PeriodicJob, status: JobStatus, exc: BaseException, backoff: Backoff) -> float:
    status.state = "retrying"
    status.consecutive_failures += 1
    status.last_error = f"{type(exc).__name__}: {exc}"
    status.last_error_at = now_us()
    delay = backoff.delay(status.consecutive_failures)
    # A job whose work cannot wait for the backoff's ceiling names its own (the lease job:
    # a node cut off must report its spend soon after the link is back).
    ceiling = getattr(job, "retry_ceiling_seconds", None)
    if isinstance(ceiling, float | int):
        delay = min(delay, float(ceiling))
    if isinstance(exc, TransientSyncError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    log.warning(
        "sync job %s failed %d time(s) in a row, retrying in %.1f s: %s",
        status.name,
        status.consecutive_failures,
        delay,
        exc,
    )
    return delay
