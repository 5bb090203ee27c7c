"""node.sqlite: its schema, migrated at open, and how every store of it opens the file.

One file holds the node's own state: the tenant registry and API-key hashes
(edge_node.tenants.registry), registry rows waiting for upload and sync checkpoints
(edge_node.tenants.replication, sync.replication.shard_state), the billing ledger
(sync.billing.ledger), Stripe webhook events and tenant billing columns
(edge_node.tenants.stripe_events), billing events shared between edges
(edge_node.tenants.shared_events) and blocked client IPs (edge_node.abuse.blocks).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_node import sqlite

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
    CREATE TABLE node_health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at INTEGER NOT NULL
    );
    """,
    # 2: sync. Registry rows to upload (key_id NULL: the tenant row), seeded with everything
    # created before sync existed; and named download checkpoints.
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
    CREATE TABLE sync_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: Stripe billing. The ledger of meter-event batches (written before a batch is sent,
    # so a crash at any point resends the same identifier with the same value), Stripe
    # webhook events applied (each once), and a tenant's subscription and billing state.
    """
    CREATE TABLE billing_ledger (
        identifier TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        customer_id TEXT,
        event_name TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        value INTEGER NOT NULL CHECK (value > 0),
        events INTEGER NOT NULL CHECK (events > 0),
        queue TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL CHECK (last_seq >= first_seq),
        state TEXT NOT NULL
            CHECK (state IN ('planned', 'sent', 'confirmed', 'set_aside')),
        attempts INTEGER NOT NULL DEFAULT 0,
        planned_at INTEGER NOT NULL,
        first_sent_at INTEGER,
        confirmed_at INTEGER,
        set_aside_reason TEXT
    ) WITHOUT ROWID;
    CREATE INDEX billing_ledger_open ON billing_ledger (tenant_id, planned_at)
        WHERE state IN ('planned', 'sent');
    CREATE INDEX billing_ledger_by_window ON billing_ledger (tenant_id, window_start);
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
    # 5: Stripe billing. The queue numbering a batch was planned in (it changes when the
    # queue's numbering restarts behind the ledger), part of its identifier. A tenant's
    # billing standing apart from its status. Billing events shared through the central
    # database that wait here: to be uploaded, or (downloaded) for their tenant to arrive.
    """
    ALTER TABLE billing_ledger ADD COLUMN queue_epoch INTEGER NOT NULL DEFAULT 0;
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
    # 6: Client IPs blocked for abuse (edge_node.abuse.blocks): written by the daemon when a spike
    # blocks one, listed and lifted by `edge-node blocks`; a row past expires_at is inert.
    """
    CREATE TABLE ip_blocks (
        ip TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        blocked_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rate_per_second REAL NOT NULL,
        baseline_per_second REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)


def open_node_database(data_dir: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection to data_dir/node.sqlite, migrated, with synchronous FULL: what it
    commits (tenants, keys, billing confirmations) survives power loss."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite.connect(
        data_dir / "node.sqlite", synchronous="full", busy_timeout_ms=busy_timeout_ms
    )
    sqlite.migrate(conn, MIGRATIONS)
    return conn
