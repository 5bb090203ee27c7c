"""The tenant registry on the central database: uploading this node's tenants and keys,
downloading every change to tenants and keys since a checkpoint, and the two replicated tables
a round moves them as.

The rule (docs/sync.md, "The tenant registry"): the central row is a tenant's truth. An edge
uploads a tenant only to create it (`ON CONFLICT DO NOTHING`); status, plan, rate limit and
name, and the tenant's own allowance (quota, quota_policy) are changed centrally and flow
down. A key is created anywhere, with its credit grant (credits, refill, refill_every); its
hash and role are then the central ones, its grant the one it was created with (an upload fills
a central row's grant only where it has none); its revocation is kept wherever it happened,
the earliest time winning, and never undone by a sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Never

from edge_node.tenants.model import KeyRecord, RegistryChange, TenantRecord
from sync.postgres import as_columns, rows_changed, translated
from sync.replication.change_feed import ChangeFeed
from sync.replication.replicated_table import Checkpoint, ReplicatedTable, Upload
from sync.replication.round_values import EdgeStorage

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.change_feed import FeedRow

_UPLOAD_TENANTS = """
    INSERT INTO tenants (tenant_id, name, status, plan, rate_limit_per_minute,
                         stripe_customer_id, created_at, updated_at, quota, quota_policy)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[],
                         $6::text[], $7::int8[], $8::int8[], $9::int4[], $10::text[])
    ON CONFLICT (tenant_id) DO NOTHING"""

# A revocation moves revoked_at earlier (or sets it); a grant fills a key that has none (a key
# uploaded before the central database carried grants), never replacing one.
_EARLIER_REVOCATION = """excluded.revoked_at IS NOT NULL
        AND (current.revoked_at IS NULL OR excluded.revoked_at < current.revoked_at)"""
_MISSING_GRANT = "current.credits IS NULL AND excluded.credits IS NOT NULL"
_UPLOAD_KEYS = f"""
    INSERT INTO api_keys AS current (tenant_id, key_id, key_hash, role, created_at, revoked_at,
                                     credits, refill, refill_every)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                         $7::int4[], $8::int4[], $9::int4[])
    ON CONFLICT (tenant_id, key_id) DO UPDATE SET
        revoked_at = CASE WHEN {_EARLIER_REVOCATION}
            THEN excluded.revoked_at ELSE current.revoked_at END,
        credits = CASE WHEN {_MISSING_GRANT} THEN excluded.credits ELSE current.credits END,
        refill = CASE WHEN {_MISSING_GRANT} THEN excluded.refill ELSE current.refill END,
        refill_every = CASE WHEN {_MISSING_GRANT}
            THEN excluded.refill_every ELSE current.refill_every END
    WHERE ({_EARLIER_REVOCATION}) OR ({_MISSING_GRANT})"""  # noqa: S608 - constant text

# A Stripe customer provisioned on an edge fills the central row once, never replacing one.
_UPLOAD_CUSTOMERS = """
    UPDATE tenants t SET stripe_customer_id = u.customer_id
    FROM unnest($1::uuid[], $2::text[]) AS u (tenant_id, customer_id)
    WHERE t.tenant_id = u.tenant_id AND t.stripe_customer_id IS NULL
      AND u.customer_id IS NOT NULL"""

_TENANT_FIELDS = (
    "tenant_id",
    "name",
    "status",
    "plan",
    "rate_limit_per_minute",
    "stripe_customer_id",
    "created_at",
    "updated_at",
    "quota",
    "quota_policy",
)
_KEY_FIELDS = (
    "tenant_id",
    "key_id",
    "key_hash",
    "role",
    "created_at",
    "revoked_at",
    "credits",
    "refill",
    "refill_every",
)

_TENANT_COLUMNS = """t.tenant_id::text AS tenant_id, t.name, t.status, t.plan,
    t.rate_limit_per_minute, t.stripe_customer_id, t.created_at, t.updated_at, t.quota,
    t.quota_policy"""

_TENANT_CHANGES = ChangeFeed("tenants", "tenants t", "t", _TENANT_COLUMNS, (("tenant_id", "uuid"),))

# Each key comes with its tenant's current row, so an edge never holds a key whose tenant it
# has not got yet (its foreign key), whatever order the two changed in.
_KEY_CHANGES = ChangeFeed(
    "API keys",
    "api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id",
    "k",
    "k.key_id, k.key_hash, k.role, k.created_at AS key_created_at, k.revoked_at, k.credits,"
    " k.refill, k.refill_every, " + _TENANT_COLUMNS,
    (("tenant_id", "uuid"), ("key_id", "text")),
)


async def upload_registry(connection: Connection, changes: Sequence[RegistryChange]) -> int:
    """Create the tenants and keys of `changes` centrally and carry their revocations, in one
    transaction; how many central rows changed."""
    tenants = list({c.tenant.tenant_id: c.tenant for c in changes}.values())
    keys = [c.key for c in changes if c.key is not None]
    if not tenants:
        return 0
    tenant_columns = as_columns(tenants, _TENANT_FIELDS)
    key_columns = as_columns(keys, _KEY_FIELDS)
    with translated(f"uploading {len(tenants)} tenants and {len(keys)} keys"):
        async with connection.transaction():
            changed = rows_changed(await connection.execute(_UPLOAD_TENANTS, *tenant_columns))
            changed += rows_changed(
                await connection.execute(_UPLOAD_CUSTOMERS, tenant_columns[0], tenant_columns[5])
            )
            if keys:
                changed += rows_changed(await connection.execute(_UPLOAD_KEYS, *key_columns))
    return changed


def registry_tenants(edge: EdgeStorage) -> ReplicatedTable[RegistryChange]:
    """Tenants as a round moves them; their upload carries every registry change, keys too."""
    registry = edge.registry

    def apply(records: list[FeedRow], checkpoint: Checkpoint) -> int:
        return registry.apply_remote([_tenant(r) for r in records], [], checkpoint=checkpoint)

    return ReplicatedTable(
        name="registry.tenants",
        feed=_TENANT_CHANGES,
        read_checkpoint=registry.sync_checkpoint,
        apply=apply,
        upload=Upload(
            pending=registry.pending_uploads,
            tenant=lambda change: change.tenant.tenant_id,
            send=upload_registry,
            acknowledge=registry.acknowledge_uploads,
            set_aside_as="registry",
        ),
    )


def registry_keys(edge: EdgeStorage) -> ReplicatedTable[Never]:
    """API keys as a round moves them: up with the tenants, down each with its tenant."""
    registry = edge.registry

    def apply(records: list[FeedRow], checkpoint: Checkpoint) -> int:
        owners = {r["tenant_id"]: _tenant(r) for r in records}
        keys = [_key(r) for r in records]
        return registry.apply_remote(list(owners.values()), keys, checkpoint=checkpoint)

    return ReplicatedTable("registry.keys", _KEY_CHANGES, registry.sync_checkpoint, apply)


def _key(record: FeedRow) -> KeyRecord:
    return KeyRecord(
        record["key_id"],
        record["tenant_id"],
        record["key_hash"],
        record["role"],
        record["key_created_at"],
        record["revoked_at"],
        record["credits"],
        record["refill"],
        record["refill_every"],
    )


def _tenant(record: FeedRow) -> TenantRecord:
    return TenantRecord(
        record["tenant_id"],
        record["name"],
        record["status"],
        record["plan"],
        record["rate_limit_per_minute"],
        record["stripe_customer_id"],
        record["created_at"],
        record["updated_at"],
        record["quota"],
        record["quota_policy"],
    )
