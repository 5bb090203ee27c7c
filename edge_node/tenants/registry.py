"""The tenant registry in node.sqlite: tenants, their plans and limits, and API-key hashes.

API keys look like `enk_<key id: 16 hex>_<secret><checksum>` (edge_node.tenants.apikeys, which also
accepts the older keys without a checksum). Only the SHA-256 of the whole key is stored;
a lookup finds the row by key id and compares hashes in constant time, so neither
the database nor a timing side channel gives a usable key away.

With a central database the registry is replicated: what that adds to TenantRegistry (the
outbox, rows downloaded, checkpoints) is edge_node.tenants.replication. The values it hands
out are edge_node.tenants.model; its tables are edge_node.tenants.schema, migrated whenever a
registry is made on a node.sqlite connection.
"""

from __future__ import annotations

import hmac
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_node import sqlite
from edge_node.clock import format_us, now_us
from edge_node.errors import RegistryError
from edge_node.node_database import open_node_database
from edge_node.tenants import schema
from edge_node.tenants.apikeys import hash_key, key_id_of, new_api_key, new_key_id
from edge_node.tenants.contacts import TenantContacts
from edge_node.tenants.model import (
    IssuedKey,
    KeyCredits,
    KeyGrant,
    Plan,
    QuotaPolicy,
    Role,
    StripeLink,
    Tenant,
    TenantStatus,
)
from edge_node.tenants.replication import RegistryReplication
from edge_node.tenants.view import RegistryView

_TENANT_COLUMNS = (
    "tenant_id, name, status, plan, rate_limit_per_minute, created_at, quota, quota_policy"
)
_STRIPE_LINK = "tenant_id, name, plan, stripe_customer_id, subscription_id, created_at"


def parse_key_id(api_key: str) -> str | None:
    """The key id inside a well-formed key, or None for anything else (a mistyped key, or
    header bytes that are not ASCII and cannot be hashed)."""
    return key_id_of(api_key)


class TenantRegistry(RegistryReplication):
    """node.sqlite: the tenants this node serves and the hashes of their API keys."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """The registry on an open node.sqlite (edge_node.node_database), its tables migrated."""
        schema.migrate(conn)
        TenantContacts(conn)  # its table, which delete_tenant_rows empties too
        self._conn = conn

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout_ms: int = 5000) -> TenantRegistry:
        """A registry on a connection of its own to data_dir/node.sqlite; close() closes it."""
        return cls(open_node_database(data_dir, busy_timeout_ms=busy_timeout_ms))

    def close(self) -> None:
        self._conn.close()

    def contacts(self) -> TenantContacts:
        """The tenants' billing emails (edge_node.tenants.contacts), on this connection."""
        return TenantContacts(self._conn)

    def view(self) -> RegistryView:
        """The live keys and tenants in memory, kept current (what admission reads)."""
        return RegistryView(self._conn)

    def create_tenant(
        self,
        name: str,
        *,
        plan: Plan = "payg",
        rate_limit_per_minute: int | None = None,
        quota: int | None = None,
        quota_policy: QuotaPolicy | None = None,
    ) -> tuple[Tenant, IssuedKey]:
        """Register a tenant with a first admin key, in one transaction."""
        now = now_us()
        tenant = Tenant(
            str(uuid.uuid4()), name, "active", plan, rate_limit_per_minute, now, quota, quota_policy
        )
        with sqlite.transaction(self._conn):
            self._conn.execute(
                "INSERT INTO tenants (tenant_id, name, status, plan, rate_limit_per_minute,"
                " quota, quota_policy, created_at, updated_at)"
                " VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?)",
                (
                    tenant.tenant_id,
                    name,
                    plan,
                    rate_limit_per_minute,
                    quota,
                    quota_policy,
                    now,
                    now,
                ),
            )
            self._record_change(tenant.tenant_id, None)
            key = self._insert_key(tenant.tenant_id, "admin", now)
        return tenant, key

    def list_tenants(self) -> list[Tenant]:
        rows = self._conn.execute(
            f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY created_at, tenant_id"  # noqa: S608
        ).fetchall()
        return [Tenant(*row) for row in rows]

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self._conn.execute(
            f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?",  # noqa: S608
            (tenant_id,),
        ).fetchone()
        return Tenant(*row) if row else None

    def past_due_since(self, tenant_id: str) -> int | None:
        """When the tenant's payment failed (microseconds), if it is past due."""
        row = self._conn.execute(
            "SELECT past_due_since FROM tenants WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def set_status(self, tenant_id: str, status: TenantStatus) -> Tenant:
        """Change a tenant's status on this node only: with a central database, the central
        row is the tenant's truth and replaces this change when it next changes."""
        with sqlite.transaction(self._conn):
            changed = self._conn.execute(
                "UPDATE tenants SET status = ?, updated_at = ? WHERE tenant_id = ?",
                (status, now_us(), tenant_id),
            ).rowcount
        tenant = self.get_tenant(tenant_id)
        if not changed or tenant is None:
            raise RegistryError(f"no tenant with id {tenant_id}")
        return tenant

    def set_quota(
        self, tenant_id: str, quota: int | None, quota_policy: QuotaPolicy | None
    ) -> Tenant:
        """Set a tenant's own allowance and policy (None: its plan's), on this node only, as
        `set_status` does. Usage already served stays spent: the allowance is only compared
        with it (edge_node.usage.quotas)."""
        with sqlite.transaction(self._conn):
            changed = self._conn.execute(
                "UPDATE tenants SET quota = ?, quota_policy = ?, updated_at = ?"
                " WHERE tenant_id = ?",
                (quota, quota_policy, now_us(), tenant_id),
            ).rowcount
        tenant = self.get_tenant(tenant_id)
        if not changed or tenant is None:
            raise RegistryError(f"no tenant with id {tenant_id}")
        return tenant

    def create_key(
        self, tenant_id: str, role: Role = "admin", credits: KeyCredits | None = None
    ) -> IssuedKey:
        with sqlite.transaction(self._conn):
            schema.require_tenant(self._conn, tenant_id)
            return self._insert_key(tenant_id, role, now_us(), credits)

    def revoke_key(self, key_id: str) -> dict[str, object]:
        now = now_us()
        with sqlite.transaction(self._conn):
            row = self._conn.execute(
                "SELECT tenant_id, revoked_at FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise RegistryError(f"no API key with id {key_id}")
            tenant_id, revoked_at = row
            if revoked_at is None:
                revoked_at = now
                self._conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (now, key_id)
                )
                self._record_change(tenant_id, key_id)
        return {"key_id": key_id, "tenant_id": tenant_id, "revoked_at": format_us(revoked_at)}

    def lookup_key(self, api_key: str) -> KeyGrant | None:
        """The grant of a live key; None for malformed, unknown or revoked keys."""
        key_id = parse_key_id(api_key)
        return None if key_id is None else self.lookup_key_id(key_id, api_key)

    def lookup_key_id(self, key_id: str, api_key: str) -> KeyGrant | None:
        """The grant of the live key `api_key`, whose id the caller has read from it with
        parse_key_id (the request path parses a key once); None for unknown or revoked keys.
        The hash of the whole key decides, compared in constant time."""
        row = self._conn.execute(
            "SELECT k.key_hash, k.tenant_id, k.role, t.status, t.rate_limit_per_minute"
            " FROM api_keys k JOIN tenants t USING (tenant_id)"
            " WHERE k.key_id = ? AND k.revoked_at IS NULL",
            (key_id,),
        ).fetchone()
        if row is None or not hmac.compare_digest(row[0], hash_key(api_key)):
            return None
        return KeyGrant(key_id, row[1], row[2], row[3], row[4])

    def count_by_status(self) -> dict[str, int]:
        """How many tenants are in each status (statuses with none left out)."""
        return count_by_status(self._conn)

    def list_keys(
        self, tenant_id: str
    ) -> list[tuple[str, Role, int, int | None, KeyCredits | None]]:
        """The tenant's keys, oldest first: id, role, created and revoked (microseconds), and
        the credit grant of those that have one."""
        rows = self._conn.execute(
            "SELECT key_id, role, created_at, revoked_at, credits, refill, refill_every"
            " FROM api_keys WHERE tenant_id = ? ORDER BY created_at, key_id",
            (tenant_id,),
        ).fetchall()
        return [
            (key_id, role, created, revoked, None if n is None else KeyCredits(n, r or 0, e or 0))
            for key_id, role, created, revoked, n, r, e in rows
        ]

    def _insert_key(
        self, tenant_id: str, role: Role, now: int, credits: KeyCredits | None = None
    ) -> IssuedKey:
        key_id = new_key_id()
        api_key = new_api_key(key_id)
        grant = (
            (None, None, None)
            if credits is None
            else (credits.credits, credits.refill, credits.refill_every_seconds or None)
        )
        self._conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, role, created_at, credits,"
            " refill, refill_every) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, tenant_id, hash_key(api_key), role, now, *grant),
        )
        self._record_change(tenant_id, key_id)
        return IssuedKey(key_id, tenant_id, role, api_key)

    # Stripe provisioning (sync/billing/provisioning.py): each id is set once and never replaced.

    def stripe_link(self, tenant_id: str) -> StripeLink | None:
        row = self._conn.execute(
            f"SELECT {_STRIPE_LINK} FROM tenants WHERE tenant_id = ?",  # noqa: S608
            (tenant_id,),
        ).fetchone()
        return StripeLink(*row) if row else None

    def unprovisioned_tenants(self) -> list[StripeLink]:
        """Tenants, canceled ones aside, still missing a Stripe customer or subscription."""
        rows = self._conn.execute(
            f"SELECT {_STRIPE_LINK} FROM tenants"  # noqa: S608
            " WHERE (stripe_customer_id IS NULL OR subscription_id IS NULL)"
            " AND status != 'canceled' ORDER BY created_at, tenant_id"
        ).fetchall()
        return [StripeLink(*row) for row in rows]

    def provisioning_failed(self, tenant_id: str, error: str, now_us: int) -> None:
        """Provisioning the tenant in Stripe failed now: the error is kept, and since when
        it has been failing (the first failure after the last success)."""
        with sqlite.transaction(self._conn):
            self._conn.execute(
                "UPDATE tenants SET provisioning_error = ?,"
                " provisioning_failing_since = coalesce(provisioning_failing_since, ?)"
                " WHERE tenant_id = ?",
                (error[:1000], now_us, tenant_id),
            )

    def provisioning_succeeded(self, tenant_id: str) -> None:
        """A provisioning attempt for the tenant went through: it is failing no longer."""
        with sqlite.transaction(self._conn):
            self._conn.execute(
                "UPDATE tenants SET provisioning_error = NULL, provisioning_failing_since = NULL"
                " WHERE tenant_id = ? AND provisioning_failing_since IS NOT NULL",
                (tenant_id,),
            )

    def provisioning_counts(self) -> dict[str, int]:
        """Tenants not provisioned in Stripe, `pending` or `failing` (for metrics)."""
        return provisioning_counts(self._conn)

    def set_stripe_customer(self, tenant_id: str, customer_id: str) -> str:
        """Record the tenant's customer unless it has one; the customer id it has now. A new
        one is queued for upload, so the central registry and every edge learn it."""
        with sqlite.transaction(self._conn):
            if self._conn.execute(
                "UPDATE tenants SET stripe_customer_id = ?"
                " WHERE tenant_id = ? AND stripe_customer_id IS NULL",
                (customer_id, tenant_id),
            ).rowcount:
                self._record_change(tenant_id, None)
            row = self._conn.execute(
                "SELECT stripe_customer_id FROM tenants WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()
        if row is None:
            raise RegistryError(f"no tenant with id {tenant_id}")
        return str(row[0])

    def stripe_customers(self, tenant_ids: Iterable[str]) -> dict[str, str]:
        """The Stripe customer of each of `tenant_ids` that has one."""
        found: dict[str, str] = {}
        for tenant_id in set(tenant_ids):
            row = self._conn.execute(
                "SELECT stripe_customer_id FROM tenants"
                " WHERE tenant_id = ? AND stripe_customer_id IS NOT NULL",
                (tenant_id,),
            ).fetchone()
            if row is not None:
                found[tenant_id] = str(row[0])
        return found

    def on_plan(self, plan: Plan, tenant_ids: Iterable[str]) -> set[str]:
        """Which of `tenant_ids` are on `plan`."""
        return {
            tenant_id
            for tenant_id in set(tenant_ids)
            if self._conn.execute(
                "SELECT 1 FROM tenants WHERE tenant_id = ? AND plan = ?", (tenant_id, plan)
            ).fetchone()
        }

    def set_subscription(self, tenant_id: str, subscription_id: str) -> str:
        """Record the tenant's subscription unless it has one; the subscription id it has."""
        with sqlite.transaction(self._conn):
            self._conn.execute(
                "UPDATE tenants SET subscription_id = ?"
                " WHERE tenant_id = ? AND subscription_id IS NULL",
                (subscription_id, tenant_id),
            )
            row = self._conn.execute(
                "SELECT subscription_id FROM tenants WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()
        if row is None:
            raise RegistryError(f"no tenant with id {tenant_id}")
        return str(row[0])

    def delete_tenant_rows(self, tenant_id: str) -> bool:
        """Remove a tenant and its API keys, with what waits for their upload; False when
        there was no such tenant. Billing history (ledger, webhook events) is kept: it holds
        amounts and ids, no tenant content."""
        with sqlite.transaction(self._conn):
            self._conn.execute("DELETE FROM registry_outbox WHERE tenant_id = ?", (tenant_id,))
            self._conn.execute("DELETE FROM api_keys WHERE tenant_id = ?", (tenant_id,))
            self._conn.execute("DELETE FROM tenant_emails WHERE tenant_id = ?", (tenant_id,))
            return (
                self._conn.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant_id,)).rowcount
                > 0
            )


@dataclass(frozen=True, slots=True)
class Unprovisioned:
    """A tenant without its Stripe customer or subscription: what it lacks, and whether
    provisioning it keeps failing (since when, Unix microseconds, and the last error)."""

    tenant_id: str
    name: str
    has_customer: bool
    has_subscription: bool
    failing_since: int | None
    error: str | None


_UNPROVISIONED = (
    "FROM tenants WHERE (stripe_customer_id IS NULL OR subscription_id IS NULL)"
    " AND status != 'canceled'"
)


def unprovisioned(conn: sqlite3.Connection) -> list[Unprovisioned]:
    """Tenants (canceled ones aside) not provisioned in Stripe, on any connection."""
    rows = conn.execute(
        "SELECT tenant_id, name, stripe_customer_id IS NOT NULL, subscription_id IS NOT NULL,"
        f" provisioning_failing_since, provisioning_error {_UNPROVISIONED}"
        " ORDER BY created_at, tenant_id"
    ).fetchall()
    return [Unprovisioned(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]


def provisioning_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Tenants not provisioned in Stripe: `failing` (attempts fail) and `pending` (not yet)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE provisioning_failing_since IS NOT NULL),"
        f" count(*) FILTER (WHERE provisioning_failing_since IS NULL) {_UNPROVISIONED}"
    ).fetchone()
    return {"failing": int(row[0]), "pending": int(row[1])}


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Tenants per status in node.sqlite, on any connection (read-only ones included)."""
    rows = conn.execute("SELECT status, count(*) FROM tenants GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}
