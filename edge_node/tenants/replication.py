"""The tenant registry's replication: its outbox, rows from the central database, checkpoints.

With a central database the registry is replicated (docs/sync.md, "The tenant registry"):
tenants and keys created here, and keys revoked here, are recorded in `registry_outbox` in
the same transaction and uploaded by the sync worker; rows downloaded from the central
database are applied by `apply_remote`, where the central row wins for a tenant (except that
a central row without a Stripe customer never erases the one provisioned here) and a key
revoked anywhere stays revoked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import astuple

from edge_node import sqlite
from edge_node.node_database import read_value, write_value
from edge_node.tenants.model import KeyRecord, RegistryChange, TenantRecord

_TENANT_RECORD = (
    "t.tenant_id, t.name, t.status, t.plan, t.rate_limit_per_minute, t.stripe_customer_id,"
    " t.created_at, t.updated_at, t.quota, t.quota_policy"
)
_KEY_RECORD = (
    "k.key_id, k.tenant_id, k.key_hash, k.role, k.created_at, k.revoked_at,"
    " k.credits, k.refill, k.refill_every"
)


class RegistryReplication:
    """The replicated side of TenantRegistry (edge_node.tenants.registry), which inherits it: the
    registry's writes record their changes here, and the sync worker uploads and applies
    through the same object and connection."""

    _conn: sqlite3.Connection

    def _record_change(self, tenant_id: str, key_id: str | None) -> None:
        """Queue a tenant's row (key_id None) or one of its keys for upload, in the caller's
        transaction."""
        self._conn.execute(
            "INSERT INTO registry_outbox (tenant_id, key_id) VALUES (?, ?)", (tenant_id, key_id)
        )

    def pending_uploads(self) -> list[RegistryChange]:
        """Every tenant and key waiting for upload, in their current state, oldest first."""
        rows = self._conn.execute(
            f"SELECT o.seq, {_TENANT_RECORD}, {_KEY_RECORD}"  # noqa: S608
            " FROM (SELECT tenant_id, key_id, max(seq) AS seq FROM registry_outbox"
            "       GROUP BY tenant_id, key_id) o"
            " JOIN tenants t ON t.tenant_id = o.tenant_id"
            " LEFT JOIN api_keys k ON k.key_id = o.key_id"
            " ORDER BY o.seq"
        ).fetchall()
        return [
            RegistryChange(
                row[0],
                TenantRecord(*row[1:11]),
                None if row[11] is None else KeyRecord(*row[11:]),
            )
            for row in rows
        ]

    def acknowledge_uploads(self, changes: Sequence[RegistryChange]) -> None:
        """Drop the outbox entries `changes` covered (call once the central COMMIT is done);
        entries recorded since stay for the next upload."""
        with sqlite.transaction(self._conn):
            self._conn.executemany(
                "DELETE FROM registry_outbox WHERE tenant_id = ? AND key_id IS ? AND seq <= ?",
                [
                    (c.tenant.tenant_id, None if c.key is None else c.key.key_id, c.seq)
                    for c in changes
                ],
            )

    def apply_remote(
        self,
        tenants: Sequence[TenantRecord],
        keys: Sequence[KeyRecord],
        *,
        checkpoint: tuple[str, str] | None = None,
    ) -> int:
        """Apply rows from the central database and store `checkpoint` (name, value), in one
        transaction; how many rows changed. A tenant takes the central row whole (its own
        allowance too); a key takes its role, keeps its earliest revocation (revoked anywhere
        stays revoked), takes its credit grant where it has none here (a grant is set once, at
        creation), and is left alone when its id already belongs to another tenant or hash
        here."""
        changed = 0
        with sqlite.transaction(self._conn):
            for tenant in tenants:
                changed += self._conn.execute(_APPLY_TENANT, astuple(tenant)).rowcount
            for key in keys:
                changed += self._conn.execute(_APPLY_KEY, astuple(key)).rowcount
            if checkpoint is not None:
                write_value(self._conn, *checkpoint)
        return changed

    def sync_checkpoint(self, name: str) -> str | None:
        return read_value(self._conn, name)


# Applying central rows (parameters in the records' field order): the WHERE clauses skip rows
# that would not change, so rowcount says what did. SQLite compares NULLs with IS.
# A tenant's billing standing (billing_status: active, past_due, canceled) comes from Stripe
# events, which travel apart (edge_node/tenants/stripe_events.py): once one was applied here, the
# central status only suspends the tenant, and otherwise the billing standing stands, so a
# download never reverts a newer billing state (nor revives a canceled tenant on resume).
_STATUS_FROM_CENTRAL = """CASE
        WHEN excluded.status = 'suspended' THEN 'suspended'
        ELSE coalesce(billing_status, excluded.status) END"""
_APPLY_TENANT = f"""
    INSERT INTO tenants (tenant_id, name, status, plan, rate_limit_per_minute,
                         stripe_customer_id, created_at, updated_at, quota, quota_policy)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant_id) DO UPDATE SET
        name = excluded.name, status = {_STATUS_FROM_CENTRAL}, plan = excluded.plan,
        rate_limit_per_minute = excluded.rate_limit_per_minute,
        stripe_customer_id = coalesce(excluded.stripe_customer_id, stripe_customer_id),
        updated_at = excluded.updated_at,
        quota = excluded.quota, quota_policy = excluded.quota_policy
    WHERE (name, status, plan, rate_limit_per_minute, stripe_customer_id, updated_at, quota,
           quota_policy)
        IS NOT (excluded.name, {_STATUS_FROM_CENTRAL}, excluded.plan,
                excluded.rate_limit_per_minute,
                coalesce(excluded.stripe_customer_id, stripe_customer_id),
                excluded.updated_at, excluded.quota, excluded.quota_policy)"""  # noqa: S608 - constant text, no input

# A key's credit grant (credits, refill, refill_every) is taken whole, and only by a key that
# has none here: the one it was created with (a key downloaded before the central database
# carried grants gets it once the creating edge has uploaded it).
_APPLY_KEY = """
    INSERT INTO api_keys (key_id, tenant_id, key_hash, role, created_at, revoked_at, credits,
                          refill, refill_every)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (key_id) DO UPDATE SET
        role = excluded.role,
        revoked_at = coalesce(min(revoked_at, excluded.revoked_at), revoked_at,
                              excluded.revoked_at),
        credits = coalesce(credits, excluded.credits),
        refill = iif(credits IS NULL, excluded.refill, refill),
        refill_every = iif(credits IS NULL, excluded.refill_every, refill_every)
    WHERE tenant_id = excluded.tenant_id AND key_hash = excluded.key_hash
      AND (role IS NOT excluded.role
           OR revoked_at IS NOT coalesce(min(revoked_at, excluded.revoked_at), revoked_at,
                                         excluded.revoked_at)
           OR (credits IS NULL AND excluded.credits IS NOT NULL))"""
