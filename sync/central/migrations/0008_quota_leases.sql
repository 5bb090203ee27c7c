-- 0008: leases of fleet-wide allowances (docs/quotas.md, "Several nodes").
--
-- A tenant's `block` allowance is shared by every edge serving it. An edge claims slices of
-- it here (sync/leases/central.py) and spends them locally; these two tables are the books:
--
--   - quota_periods: one row per tenant and billing period (the calendar month in UTC, its
--     start in ms since the epoch) with the allowance the last claim was made under. A claim
--     locks this row first, so claims for one tenant and period are made one at a time.
--   - quota_leases: one row per tenant, period and edge: `granted`, every unit the edge was
--     given in the period (what it spent included); `spent`, what it last reported served
--     (never lowered); `expires_at`, past which (and a grace) a claim by another edge takes
--     back what this one holds unreported (granted := spent); `idle`, set when the edge gave
--     back all but what it kept for a next request and cleared when it spends or asks again.
--     The fleet has committed sum(greatest(granted, spent)); a claim grants at most the
--     allowance minus that.
--
-- Like every table here: tenant_id leads the key (Citus: distributed on tenant_id, colocated
-- with tenants, so a claim's statements run on one worker), row-level security isolates
-- tenants with the sync role exempt. No foreign key to tenants: an edge may claim for a
-- tenant whose row has not reached this database yet. Nothing is replicated down from these
-- tables: only the claiming edge reads its answer.

CREATE TABLE quota_periods (
    tenant_id uuid NOT NULL,
    period_start bigint NOT NULL,
    allowance bigint NOT NULL CHECK (allowance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period_start)
);

CREATE TABLE quota_leases (
    tenant_id uuid NOT NULL,
    period_start bigint NOT NULL,
    node_id text NOT NULL CHECK (length(node_id) BETWEEN 1 AND 63),
    granted bigint NOT NULL CHECK (granted >= 0),
    spent bigint NOT NULL CHECK (spent >= 0),
    expires_at timestamptz NOT NULL,
    idle boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period_start, node_id)
);

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['quota_periods', 'quota_leases'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I'
            ' USING (tenant_id = (SELECT edge_node_session_tenant()))'
            ' WITH CHECK (tenant_id = (SELECT edge_node_session_tenant()))',
            tenant_table
        );
        EXECUTE format(
            'CREATE POLICY edge_node_sync ON %I TO %I USING (true) WITH CHECK (true)',
            tenant_table, current_user
        );
    END LOOP;
END
$$;

-- A tenant's deletion (a row in tenant_deletions, 0005) takes its leases with the rest of it:
-- quota_periods first, the row every claim locks first, so that a deletion and a claim take
-- their locks in the same order. A claim arriving after the deletion makes no row again.
CREATE OR REPLACE FUNCTION edge_node_destroy_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tenant_data_keys WHERE tenant_id = NEW.tenant_id;
    DELETE FROM ratings WHERE tenant_id = NEW.tenant_id;
    DELETE FROM api_keys WHERE tenant_id = NEW.tenant_id;
    DELETE FROM quota_periods WHERE tenant_id = NEW.tenant_id;
    DELETE FROM quota_leases WHERE tenant_id = NEW.tenant_id;
    DELETE FROM tenants WHERE tenant_id = NEW.tenant_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON quota_periods
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON quota_leases
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();
