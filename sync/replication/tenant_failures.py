"""Per-tenant failures within a shard's rounds: one tenant's error does not stop the others.

A tenant's upload or catch-up that fails on something of its own (a local SQLite error on
its file, its central rows locked past the lock timeout, a deadlock or serialization failure
on them) is recorded here and the round goes on with the next tenant. The failing tenant is
skipped until its own capped exponential backoff (sync/backoff.py) has passed, then retried;
a success clears it. Anything that concerns the whole connection (it dropped, a statement
timed out, the schema is missing) still fails the round, and the shard's backoff applies.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from edge_node.clock import now_us
from edge_node.errors import SyncError
from sync.backoff import Backoff
from sync.postgres import refused_for_its_rows


@dataclass
class TenantFailure:
    failures: int
    retry_at: int  # microseconds since the epoch
    error: str


@dataclass
class TenantFailures:
    """The tenants of one shard currently failing, and how many tenant failures so far."""

    backoff: Backoff = field(default_factory=Backoff)
    failing: dict[str, TenantFailure] = field(default_factory=dict)
    total: int = 0
    last_error: str | None = None

    def may_try(self, tenant_id: str, now: int) -> bool:
        failure = self.failing.get(tenant_id)
        return failure is None or failure.retry_at <= now

    def succeeded(self, tenant_id: str) -> None:
        self.failing.pop(tenant_id, None)

    def failed(self, tenant_id: str, exc: BaseException) -> None:
        held = self.failing.get(tenant_id)
        failures = 1 if held is None else held.failures + 1
        error = f"tenant {tenant_id}: {type(exc).__name__}: {exc}"
        delay = self.backoff.delay(failures)
        self.failing[tenant_id] = TenantFailure(failures, now_us() + int(delay * 1e6), error)
        self.total += 1
        self.last_error = error


def is_tenant_failure(exc: BaseException, connection_closed: bool) -> bool:
    """Whether `exc` concerns one tenant only, so the round may go on with the others."""
    if isinstance(exc, sqlite3.Error):
        return True
    return isinstance(exc, SyncError) and not connection_closed and refused_for_its_rows(exc)
