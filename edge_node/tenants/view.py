"""The registry as admission reads it: live API keys and tenants' standing, held in memory.

Every request needs its credential's tenant, role, status and rate limit; reading them from
node.sqlite cost each request a join. A `RegistryView` holds them in dicts, read in one go,
and reads them again whenever node.sqlite has changed:

- a change by any other connection (the `edge-node` commands, the sync worker, another
  worker process) moves the file's `PRAGMA data_version`, which is polled at most every
  `REFRESH_INTERVAL_SECONDS` (a key revoked, a tenant suspended or deleted is refused by
  every worker within that interval of its commit);
- a change on the view's own connection (which `data_version` does not count) moves the
  connection's `total_changes`, compared on every lookup, so it applies to the very next
  request;
- a lookup that finds nothing polls at once, so a key or tenant created a moment ago is
  served on its first request.

The key's hash still decides, compared in constant time (edge_node.tenants.registry).
"""

from __future__ import annotations

import hmac
import sqlite3
import time
from dataclasses import dataclass

from edge_node.tenants.apikeys import hash_key
from edge_node.tenants.model import KeyCredits, KeyGrant, Plan, QuotaPolicy, TenantStatus

REFRESH_INTERVAL_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class TenantStanding:
    """What admission needs of a tenant: its status, since when it is past due, its limit,
    its plan and its own quota."""

    tenant_id: str
    status: TenantStatus
    past_due_since: int | None  # microseconds
    rate_limit_per_minute: int | None
    plan: Plan
    quota: int | None
    quota_policy: QuotaPolicy | None


class RegistryView:
    """Live keys and tenants of node.sqlite in memory, kept current as the module says."""

    def __init__(
        self, conn: sqlite3.Connection, *, refresh_interval: float = REFRESH_INTERVAL_SECONDS
    ) -> None:
        self._conn = conn
        self._interval = refresh_interval
        self._keys: dict[str, tuple[str, KeyGrant]] = {}
        # Keys whose hash matched since the last reload: a dict lookup by the whole key (its
        # hash salted per process) rather than a parse, a CRC and a SHA-256 per request.
        self._verified: dict[str, KeyGrant] = {}
        self._tenants: dict[str, TenantStanding] = {}
        self._data_version = -1
        self._changes = -1
        self._next_poll = 0.0
        self.reloads = 0
        self._poll()

    def __len__(self) -> int:
        """Live API keys."""
        return len(self._keys)

    def admitted(self, api_key: str) -> KeyGrant | None:
        """The grant of `api_key` if it was verified since the registry last changed (its
        format, checksum and hash need no second look); None: not verified yet, or the
        registry has just changed (every key is verified again, by `grant`). A key never
        verified costs no statement here: a mistyped one is refused before any."""
        found = self._verified.get(api_key)
        due = self._conn.total_changes != self._changes or time.monotonic() >= self._next_poll
        if found is not None and due and self._poll():  # changed: verified keys were emptied
            return None
        return found

    def grant(self, key_id: str, api_key: str) -> KeyGrant | None:
        """The grant of the live key `api_key` with id `key_id`; None: unknown or revoked."""
        self._current()
        found = self._keys.get(key_id)
        if found is None and self._poll():
            found = self._keys.get(key_id)
        if found is None or not hmac.compare_digest(found[0], hash_key(api_key)):
            return None
        if len(self._verified) < len(self._keys):  # one entry per live key at most
            self._verified[api_key] = found[1]
        return found[1]

    def tenant(self, tenant_id: str) -> TenantStanding | None:
        """The tenant's standing; None when node.sqlite has no such tenant."""
        self._current()
        found = self._tenants.get(tenant_id)
        if found is None and self._poll():
            found = self._tenants.get(tenant_id)
        return found

    def _current(self) -> None:
        if self._conn.total_changes != self._changes or time.monotonic() >= self._next_poll:
            self._poll()

    def _poll(self) -> bool:
        """Read the registry again if node.sqlite changed since; True when it did."""
        changes = self._conn.total_changes
        self._next_poll = time.monotonic() + self._interval
        (data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if data_version == self._data_version and changes == self._changes:
            return False
        self._load()
        self._data_version, self._changes = data_version, changes
        return True

    def _load(self) -> None:
        rows = self._conn.execute(
            "SELECT tenant_id, status, past_due_since, rate_limit_per_minute, plan, quota,"
            " quota_policy FROM tenants"
        ).fetchall()
        tenants = {row[0]: TenantStanding(*row) for row in rows}
        keys = {}
        for key_id, key_hash, tenant_id, role, credits, refill, every in self._conn.execute(
            "SELECT key_id, key_hash, tenant_id, role, credits, refill, refill_every"
            " FROM api_keys WHERE revoked_at IS NULL"
        ):
            tenant = tenants.get(tenant_id)
            if tenant is not None:
                grant = KeyGrant(
                    key_id,
                    tenant_id,
                    role,
                    tenant.status,
                    tenant.rate_limit_per_minute,
                    tenant.plan,
                    tenant.quota,
                    tenant.quota_policy,
                    None if credits is None else KeyCredits(credits, refill or 0, every or 0),
                )
                keys[key_id] = (key_hash, grant)
        self._tenants, self._keys, self._verified = tenants, keys, {}
        self.reloads += 1
