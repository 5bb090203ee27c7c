-- 0003: the registry's rules enforced centrally, not only on the edges; and an index for
-- downloading a whole shard's rating changes at once.
--
-- The edges never undo a revocation, never delete a key and never take a new hash for a key
-- id (docs/sync.md, "The tenant registry"), so an operator's UPDATE or DELETE that does any
-- of those would leave the central row and every edge disagreeing for good, and a key an
-- operator believes revoked would still open the edges. These triggers refuse them here:
--   - revoked_at may be set, or moved earlier, but never cleared nor moved later;
--   - key_hash, key_id and tenant_id of a key never change (issue a new key instead);
--   - a key is never deleted, by DELETE or TRUNCATE (revoke it instead), except with its
--     tenant when that tenant is deleted for good (0005: its row in tenant_deletions).
-- The edges' own upload only ever sets or moves revoked_at earlier, so it never trips them.
-- An owner who must really remove a key row (a database being decommissioned) can still
-- ALTER TABLE api_keys DISABLE TRIGGER api_keys_registry_rules (and ..._no_truncate).
-- On Citus distributed tables these need citus.enable_unsafe_triggers = on, like 0001's.

CREATE FUNCTION edge_node_api_key_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Looked up only once 0005 created the table (a statement is planned when it runs).
        IF to_regclass('tenant_deletions') IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM tenant_deletions WHERE tenant_id = OLD.tenant_id) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION 'API key % of tenant % cannot be deleted', OLD.key_id, OLD.tenant_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Revoke it instead: UPDATE api_keys SET revoked_at = <now in '
                      'microseconds> WHERE ...; edges never delete a key.';
    END IF;
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.key_id IS DISTINCT FROM OLD.key_id
    THEN
        RAISE EXCEPTION 'API key % of tenant % cannot move to another tenant or key id',
            OLD.key_id, OLD.tenant_id
            USING ERRCODE = 'check_violation',
                  HINT = 'Issue a new key for the other tenant and revoke this one.';
    END IF;
    IF NEW.key_hash IS DISTINCT FROM OLD.key_hash THEN
        RAISE EXCEPTION 'the hash of API key % of tenant % cannot change', OLD.key_id,
            OLD.tenant_id
            USING ERRCODE = 'check_violation',
                  HINT = 'Issue a new key and revoke this one; edges keep the first hash '
                      'of a key id.';
    END IF;
    IF OLD.revoked_at IS NOT NULL
        AND (NEW.revoked_at IS NULL OR NEW.revoked_at > OLD.revoked_at) THEN
        RAISE EXCEPTION 'API key % of tenant % was revoked at % and cannot be un-revoked',
            OLD.key_id, OLD.tenant_id, OLD.revoked_at
            USING ERRCODE = 'check_violation',
                  HINT = 'A revocation is final (it may only move earlier); issue a new key.';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION edge_node_api_keys_no_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'api_keys cannot be truncated'
        USING ERRCODE = 'restrict_violation',
              HINT = 'Revoke keys instead; edges never delete a key.';
END
$$;

CREATE TRIGGER api_keys_registry_rules BEFORE UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION edge_node_api_key_rules();
CREATE TRIGGER api_keys_registry_rules_no_truncate BEFORE TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION edge_node_api_keys_no_truncate();

-- A shard-wide download (sync/ratings.py, download_shard_ratings) reads every tenant's rating
-- changes since one checkpoint in (change_xid, tenant_id, id) order, so that an edge opens
-- only the tenant files that have changes.
CREATE INDEX ratings_shard_changes ON ratings (change_xid, tenant_id, id);
