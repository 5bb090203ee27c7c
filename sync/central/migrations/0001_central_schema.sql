-- 0001: the central schema: tenants, API-key hashes, ratings, row-level security by tenant.
--
-- Applied once, in one transaction, by `edge-node central migrate` (sync/central_schema.py),
-- which records it in schema_migrations. Never edit this file once released: add 0002_*.sql.
--
-- Keys. tenant_id leads every primary and unique key, and the only foreign key includes it,
-- so the tables can be distributed on Citus with tenant_id as distribution column, colocated:
--   SELECT create_distributed_table('tenants', 'tenant_id');
--   SELECT create_distributed_table('api_keys', 'tenant_id', colocate_with => 'tenants');
--   SELECT create_distributed_table('ratings', 'tenant_id', colocate_with => 'tenants');
-- There are no sequences: ids come from the edges (rating ids are uuid5 of tenant, user and
-- item, the same on every replica), and change positions are transaction ids (below).
-- Several hash-sharded servers each hold this whole schema for the tenants mapped to them.
-- Times are integers of microseconds since the epoch, exactly as on the edges, so the
-- conflict rule (last writer wins on updated_at, origin_node breaks ties) compares the very
-- same numbers everywhere.
--
-- Change positions. Every row carries change_xid: the xid8 of the transaction that last
-- inserted or updated it, stamped by a BEFORE trigger whoever writes (upload, admin, COPY).
-- A downloader asks for one tenant's rows changed since its checkpoint C, in one statement
-- (or one REPEATABLE READ transaction, so both parts share a snapshot):
--     horizon H := pg_snapshot_xmin(pg_current_snapshot())
--     rows WHERE tenant_id = $1 AND change_xid >= C AND change_xid < H
--          ORDER BY change_xid, id            -- index ratings_changes
-- and stores H as its next checkpoint (when a page is cut short by LIMIT, it keeps the last
-- (change_xid, id) it read and resumes strictly after it, still below H).
-- Why not a sequence or a timestamp: positions are taken when a transaction writes but become
-- visible when it commits, in any order, so a reader that saw position 11 may later see 10
-- commit and skip it forever. H, the oldest transaction still running in the reader's
-- snapshot, fixes that: every transaction below H has ended, so every row below H that will
-- ever be visible already is, and rows of transactions still running sit at or above H and
-- are read next time. A long-running writing transaction holds H back: downloads lag behind
-- it, but never skip. A row written twice moves to its newer position; deletes are
-- tombstones (deleted = true), so they travel like any other change.
-- On Citus the horizon and the rows must come from the worker that holds the tenant's shard
-- (a router query filtered on tenant_id), since each worker has its own transaction ids;
-- triggers on distributed tables need citus.enable_unsafe_triggers = on.
--
-- Row-level security. tenants, api_keys and ratings have RLS ENABLEd and FORCEd (it applies
-- to the tables' owner too). Two permissive policies on each:
--   tenant_isolation, for every role: only rows whose tenant_id equals the session setting
--     edge_node.tenant_id (SET edge_node.tenant_id = '<uuid>', or SET LOCAL per transaction).
--     Unset or empty, it matches nothing; rows written must match it too (WITH CHECK).
--     (NULLIF: once a SET LOCAL has ended the setting reads back as '', which must match
--     nothing rather than fail the cast to uuid.)
--   edge_node_sync, for the sync role: every row. The sync role is the role that ran this
--     migration and owns the tables; another login becomes a sync role by being granted it
--     (GRANT <owner> TO <login>). The exemption is a visible policy, not a BYPASSRLS
--     attribute, because only a superuser can grant BYPASSRLS and managed servers rarely allow
--     it. Superusers bypass RLS anyway.
-- Other roles get no table privileges here: an operator grants what each role needs.

CREATE FUNCTION edge_node_stamp_change_xid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

CREATE TABLE tenants (
    tenant_id uuid NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'suspended', 'past_due', 'canceled')),
    plan text NOT NULL CHECK (plan IN ('payg', 'tiered', 'flat')),
    rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
    stripe_customer_id text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id)
);
CREATE INDEX tenants_changes ON tenants (change_xid, tenant_id);

-- Only the SHA-256 of a key is stored (hex), never the key. key_id is unique per tenant; it is
-- 64 random bits, and each edge's registry rejects a duplicate outright.
CREATE TABLE api_keys (
    tenant_id uuid NOT NULL,
    key_id text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    key_hash text NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    role text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    created_at bigint NOT NULL,
    revoked_at bigint,
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id, key_id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (tenant_id)
);
CREATE INDEX api_keys_changes ON api_keys (change_xid, tenant_id, key_id);

-- No foreign key to tenants: an edge may upload ratings of a tenant registered locally before
-- the registry reaches PostgreSQL, and rejecting them would lose accepted writes.
CREATE TABLE ratings (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    item_id text NOT NULL CHECK (length(item_id) BETWEEN 1 AND 128),
    score smallint NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment text CHECK (comment IS NULL OR length(comment) <= 2000),
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    origin_node text NOT NULL CHECK (length(origin_node) BETWEEN 1 AND 63),
    deleted boolean NOT NULL DEFAULT false,
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, user_id, item_id)
);
CREATE INDEX ratings_changes ON ratings (tenant_id, change_xid, id);

CREATE TRIGGER tenants_change_xid BEFORE INSERT OR UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();
CREATE TRIGGER api_keys_change_xid BEFORE INSERT OR UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();
CREATE TRIGGER ratings_change_xid BEFORE INSERT OR UPDATE ON ratings
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();

-- Score aggregates are derived, not stored: nothing to keep consistent, and concurrent
-- uploads never contend on a hot item's row. Edges keep their own materialized aggregates.
-- security_invoker (PostgreSQL 15+) makes the view obey the caller's row-level security.
CREATE VIEW item_scores WITH (security_invoker = true) AS
SELECT
    tenant_id,
    item_id,
    count(*) AS count,
    sum(score) AS total,
    count(*) FILTER (WHERE score = 1) AS s1,
    count(*) FILTER (WHERE score = 2) AS s2,
    count(*) FILTER (WHERE score = 3) AS s3,
    count(*) FILTER (WHERE score = 4) AS s4,
    count(*) FILTER (WHERE score = 5) AS s5
FROM ratings
WHERE NOT deleted
GROUP BY tenant_id, item_id;

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['tenants', 'api_keys', 'ratings'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I'
            ' USING (tenant_id = NULLIF(current_setting(''edge_node.tenant_id'', true), '''')::uuid)'
            ' WITH CHECK (tenant_id = NULLIF(current_setting(''edge_node.tenant_id'', true), '''')::uuid)',
            tenant_table
        );
        EXECUTE format(
            'CREATE POLICY edge_node_sync ON %I TO %I USING (true) WITH CHECK (true)',
            tenant_table, current_user
        );
    END LOOP;
END
$$;
