-- 0005: encryption at rest: sealed comments, tenant data keys, tenant deletions.
--
-- Comments. Edges seal every comment (AES-256-GCM under a per-tenant data key, bound to its
-- tenant and rating id: edge_node/sealing.py) and upload the sealed bytes as they are, into
-- comment_sealed; the central database never sees a comment's text nor a key that opens it.
-- `comment` stays for rows uploaded before this migration: edges upgraded past it seal their
-- plain-text comments, and the upload that carries the seal sets `comment` to NULL. At most
-- 2000 characters of UTF-8 plus the seal's 37 bytes.
--
-- Data keys. A tenant's data keys travel between its edges wrapped (AES-256-GCM) by the fleet
-- key, which every edge of the fleet holds in a file and the database never does. key_id is
-- random: two edges creating a key for one tenant at once simply add two keys, and every
-- sealed comment names the key that opens it. Rows are only ever added (or destroyed with
-- their tenant); change_xid lets edges download them since a checkpoint, as for ratings.
--
-- Deletions. Deleting a tenant anywhere inserts its row in tenant_deletions (an edge's
-- `edge-node tenants delete`, or an operator's INSERT here). The insert destroys the tenant's
-- data keys, ratings, API keys and registry row in the same transaction, and the tombstone
-- stays for good: edges download it since a checkpoint and shred their own copies, and rows
-- uploaded later for that tenant (by an edge that has not heard yet) are dropped on arrival,
-- so nothing is resurrected. A backup of this database taken before a deletion still holds
-- the tenant's data keys wrapped by the fleet key: retire the fleet key to make those backups
-- unreadable too (docs/security.md).

ALTER TABLE ratings ADD COLUMN comment_sealed bytea
    CHECK (comment_sealed IS NULL OR length(comment_sealed) <= 8192);

CREATE TABLE tenant_data_keys (
    tenant_id uuid NOT NULL,
    key_id text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    wrapped bytea NOT NULL CHECK (length(wrapped) BETWEEN 28 AND 128),
    fleet_key_id text NOT NULL CHECK (fleet_key_id ~ '^[0-9a-f]{16}$'),
    created_at bigint NOT NULL,
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE INDEX tenant_data_keys_changes ON tenant_data_keys (change_xid, tenant_id, key_id);

CREATE TABLE tenant_deletions (
    tenant_id uuid NOT NULL,
    deleted_at bigint NOT NULL,
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id)
);
CREATE INDEX tenant_deletions_changes ON tenant_deletions (change_xid, tenant_id);

CREATE TRIGGER tenant_data_keys_change_xid BEFORE INSERT OR UPDATE ON tenant_data_keys
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();
CREATE TRIGGER tenant_deletions_change_xid BEFORE INSERT OR UPDATE ON tenant_deletions
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();

CREATE FUNCTION edge_node_destroy_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tenant_data_keys WHERE tenant_id = NEW.tenant_id;
    DELETE FROM ratings WHERE tenant_id = NEW.tenant_id;
    DELETE FROM api_keys WHERE tenant_id = NEW.tenant_id;
    DELETE FROM tenants WHERE tenant_id = NEW.tenant_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenant_deletions_destroy AFTER INSERT ON tenant_deletions
    FOR EACH ROW EXECUTE FUNCTION edge_node_destroy_tenant();

-- A BEFORE INSERT trigger that returns NULL drops the row, before ON CONFLICT is considered:
-- an upsert of a deleted tenant's row neither inserts nor updates anything. SECURITY DEFINER
-- (the owner, the sync role, sees every tombstone): a role granted only `ratings` still has
-- its rows for a deleted tenant dropped, without being granted tenant_deletions.
CREATE FUNCTION edge_node_refuse_deleted_tenant() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenant_deletions WHERE tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON ratings
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();
CREATE TRIGGER a_refuse_deleted_tenant BEFORE INSERT ON tenant_data_keys
    FOR EACH ROW EXECUTE FUNCTION edge_node_refuse_deleted_tenant();

-- Row-level security as on the other tenant tables (0001): a session scoped to one tenant
-- sees only that tenant's rows; the sync role sees every row.
DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['tenant_data_keys', 'tenant_deletions'] LOOP
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
