-- 0007: a tenant's own allowance and an API key's credit grant, replicated like the rest of
-- their rows (docs/quotas.md, "Several nodes"; docs/sync.md, "The tenant registry").
--
--   - tenants.quota, quota_policy: units per billing period and what happens past them
--     (NULL: the tenant's plan's, each edge's `[quotas]`). Part of the tenant's row: set when
--     an edge creates the tenant, changed centrally, taken whole by every edge.
--   - api_keys.credits, refill, refill_every (seconds): the grant a key is created with (NULL
--     credits: the key spends none). Set once: an edge's upload fills a key's grant only where
--     the central row has none. What a key has left is no column here: each edge keeps its
--     own balance, starting from the grant.
--
-- Each column is added first and constrained apart, the constraints in a DO block: on Citus
-- (where both tables are distributed on tenant_id) an ADD COLUMN carrying a CHECK is refused,
-- and an ADD CONSTRAINT is sent to the shards as its statement's text, which must then be a
-- single command; inside the block each statement is one (on plain PostgreSQL the block is
-- simply run).
ALTER TABLE tenants ADD COLUMN quota integer;
ALTER TABLE tenants ADD COLUMN quota_policy text;
ALTER TABLE api_keys ADD COLUMN credits integer;
ALTER TABLE api_keys ADD COLUMN refill integer;
ALTER TABLE api_keys ADD COLUMN refill_every integer;

DO $$
BEGIN
    ALTER TABLE tenants ADD CONSTRAINT tenants_quota_check CHECK (quota >= 0);
    ALTER TABLE tenants ADD CONSTRAINT tenants_quota_policy_check
        CHECK (quota_policy IN ('overage', 'block'));
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_credits_check CHECK (credits >= 0);
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_refill_check CHECK (refill >= 0);
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_refill_every_check CHECK (refill_every > 0);
END
$$;
