"""The tenants component of node.sqlite: tenants, API keys, what waits for upload, Stripe events.

Migrated by `migrate` whenever node.sqlite is opened for the registry (edge_node.tenants
.registry); the file's shared part and its component versions are edge_node.node_database.
"""

from __future__ import annotations

import sqlite3

from edge_node import sqlite
from edge_node.errors import RegistryError

COMPONENT = "tenants"
MIGRATIONS = (
    """
    CREATE TABLE tenants (
        tenant_id TEXT PRIMARY KEY,
        name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        status TEXT NOT NULL DEFAULT 'active'
            CHECK (status IN ('active', 'suspended', 'past_due', 'canceled')),
        plan TEXT NOT NULL CHECK (plan IN ('payg', 'tiered', 'flat')),
        rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0),
        stripe_customer_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
        key_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
    """,
    # 2: sync. Registry rows to upload (key_id NULL: the tenant row), seeded with everything
    # created before sync existed.
    """
    CREATE TABLE registry_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        key_id TEXT
    );
    INSERT INTO registry_outbox (tenant_id, key_id)
        SELECT tenant_id, NULL FROM tenants ORDER BY created_at, tenant_id;
    INSERT INTO registry_outbox (tenant_id, key_id)
        SELECT tenant_id, key_id FROM api_keys ORDER BY created_at, key_id;
    """,
    # 3: Stripe billing. Stripe webhook events applied (each once), and a tenant's
    # subscription and billing state.
    """
    CREATE TABLE webhook_events (
        event_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        created INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        outcome TEXT NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE tenants ADD COLUMN subscription_id TEXT;
    ALTER TABLE tenants ADD COLUMN billing_event_created INTEGER;
    ALTER TABLE tenants ADD COLUMN past_due_since INTEGER;
    """,
    # 4: Stripe event ordering. Subscription events are ordered among themselves (a
    # cancellation is not outdated by a later invoice event), so the newest one applied is
    # kept apart from billing_event_created (the newest of any kind); and which tenant each
    # webhook event was about, for operators asking why a tenant changed.
    """
    ALTER TABLE tenants ADD COLUMN subscription_event_created INTEGER;
    ALTER TABLE webhook_events ADD COLUMN tenant_id TEXT;
    CREATE INDEX webhook_events_by_tenant ON webhook_events (tenant_id, created)
        WHERE tenant_id IS NOT NULL;
    """,
    # 5: a tenant's billing standing apart from its status; billing events shared through
    # the central database that wait here: to be uploaded, or (downloaded) for their tenant.
    """
    ALTER TABLE tenants ADD COLUMN billing_status TEXT
        CHECK (billing_status IN ('active', 'past_due', 'canceled'));
    UPDATE tenants SET billing_status = status
        WHERE billing_event_created IS NOT NULL AND status != 'suspended';
    CREATE TABLE shared_billing_events (
        event_id TEXT PRIMARY KEY,
        waiting_for TEXT NOT NULL CHECK (waiting_for IN ('upload', 'tenant')),
        tenant_id TEXT NOT NULL,
        type TEXT NOT NULL,
        created INTEGER NOT NULL,
        customer_id TEXT,
        subscription_id TEXT,
        target TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: Stripe's thin event notifications (an event destination's), each recorded once and
    # applied by the sync worker once fetched (edge_node/tenants/thin_events.py).
    """
    CREATE TABLE stripe_thin_events (
        event_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        created INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'ignored')),
        outcome TEXT
    ) WITHOUT ROWID;
    CREATE INDEX stripe_thin_events_pending ON stripe_thin_events (created)
        WHERE state = 'pending';
    """,
    # 7: Stripe provisioning that keeps failing for a tenant: since when, and the last
    # error (this node's own account of it: not replicated).
    """
    ALTER TABLE tenants ADD COLUMN provisioning_failing_since INTEGER;
    ALTER TABLE tenants ADD COLUMN provisioning_error TEXT;
    """,
    # 8: a tenant's own usage allowance per billing period and what happens past it, beside
    # its plan's (NULL: the plan's, `[quotas]`).
    """
    ALTER TABLE tenants ADD COLUMN quota INTEGER CHECK (quota >= 0);
    ALTER TABLE tenants ADD COLUMN quota_policy TEXT
        CHECK (quota_policy IN ('overage', 'block'));
    """,
    # 9: an API key's credit grant (its balance is kept in credits.sqlite,
    # edge_node/tenants/credits.py); NULL credits: the key spends none.
    """
    ALTER TABLE api_keys ADD COLUMN credits INTEGER CHECK (credits >= 0);
    ALTER TABLE api_keys ADD COLUMN refill INTEGER CHECK (refill >= 0);
    ALTER TABLE api_keys ADD COLUMN refill_every INTEGER CHECK (refill_every > 0);
    """,
    # 10: the central database carries key grants (its migration 0007): keys with a grant,
    # uploaded before it did, are queued again so that it gets their grant.
    """
    INSERT INTO registry_outbox (tenant_id, key_id)
        SELECT tenant_id, key_id FROM api_keys WHERE credits IS NOT NULL
        ORDER BY created_at, key_id;
    """,
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the tenants component of an open node.sqlite up to date."""
    sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)


def require_tenant(conn: sqlite3.Connection, tenant_id: str) -> None:
    """RegistryError unless `tenant_id` names a tenant (inside the caller's transaction)."""
    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone() is None:
        raise RegistryError(f"no tenant with id {tenant_id}")
