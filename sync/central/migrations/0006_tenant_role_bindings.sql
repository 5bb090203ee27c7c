-- 0006: tenant isolation bound to database roles, not to a setting any session may change.
--
-- Until now every tenant table's policy tenant_isolation compared tenant_id with the session
-- setting edge_node.tenant_id, and any session can run SET edge_node.tenant_id = '<other>' (or
-- set_config): a role scoped to tenant A could read B by asking. From here on a role's scope
-- comes from tenant_roles, which only the sync role writes:
--   - a row (role, tenant_id) binds the role to one tenant: sessions acting as it see and write
--     that tenant's rows only, whatever they SET, RESET or DISCARD;
--   - a row (role, scoped_by_setting = true) marks a trusted application role: an edge-node or
--     service that holds the database credentials itself and scopes each transaction with
--     SET LOCAL edge_node.tenant_id, exactly as before. Such a role must never be handed to a
--     tenant or to code running a tenant's SQL;
--   - every other role (besides the sync role, exempt as before) sees and writes no row at all.
-- So this migration closes the setting for every role not marked trusted: an operator whose
-- application role relied on the setting marks it (docs/sync.md, "Row-level security").
--
-- Whose binding. The policies read the binding of current_user: a pooled login that switches
-- with SET ROLE <tenant role> per request (the authenticator pattern) gets that role's tenant.
-- A login that is itself bound never gets another tenant's rows by switching roles: when
-- session_user differs from current_user and session_user is bound to a tenant, the session's
-- tenant must be that one, or it is no tenant at all (SET ROLE to a role of B, or to a trusted
-- role with the setting naming B, shows nothing). SECURITY DEFINER functions run as their
-- owner: those of this schema belong to the sync role, whose own policy decides for them.
--
-- Roles are stored as regrole (the role's oid): renaming a role keeps its binding, and a role
-- dropped and created again under the same name is a new role, bound to nothing.
--
-- Reading the binding. edge_node_session_tenant() runs with the caller's rights (a function
-- of the definer's would see the definer as current_user), so every role may SELECT from
-- tenant_roles, and a policy there shows it only its own binding and its login's. Its
-- search_path ends in pg_temp, named last, so that a temporary table of the session cannot
-- stand in for tenant_roles; 0005's SECURITY DEFINER trigger function and 0003's key rule get
-- the same fix, so a temporary tenant_deletions cannot decide for them. The policies call
-- the function as a scalar subquery, evaluated once per statement rather than once per row.
--
-- Not tenant data: no tenant_id leads its key. On Citus make it a reference table.

CREATE TABLE tenant_roles (
    role regrole PRIMARY KEY,
    tenant_id uuid,
    scoped_by_setting boolean NOT NULL DEFAULT false,
    bound_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((tenant_id IS NULL) = scoped_by_setting)
);

ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY own_binding ON tenant_roles FOR SELECT
    USING (role = to_regrole(quote_ident(current_user))
        OR role = to_regrole(quote_ident(session_user)));
GRANT SELECT ON tenant_roles TO PUBLIC;

CREATE FUNCTION edge_node_session_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    acting tenant_roles;
    login tenant_roles;
    scope uuid;
BEGIN
    SELECT * INTO acting FROM tenant_roles WHERE role = to_regrole(quote_ident(current_user));
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF acting.scoped_by_setting THEN
        -- NULLIF: once a SET LOCAL has ended the setting reads back as '', which must match
        -- nothing rather than fail the cast to uuid.
        scope := NULLIF(current_setting('edge_node.tenant_id', true), '')::uuid;
    ELSE
        scope := acting.tenant_id;
    END IF;
    IF session_user <> current_user THEN
        SELECT * INTO login FROM tenant_roles WHERE role = to_regrole(quote_ident(session_user));
        IF FOUND AND NOT login.scoped_by_setting AND login.tenant_id IS DISTINCT FROM scope THEN
            RETURN NULL;
        END IF;
    END IF;
    RETURN scope;
END
$$;

DO $$
DECLARE
    tenant_table text;
BEGIN
    EXECUTE format(
        'ALTER FUNCTION edge_node_session_tenant() SET search_path = pg_catalog, %I, pg_temp',
        current_schema()
    );
    EXECUTE format(
        'ALTER FUNCTION edge_node_refuse_deleted_tenant()'
        ' SET search_path = pg_catalog, %I, pg_temp',
        current_schema()
    );
    EXECUTE format(
        'ALTER FUNCTION edge_node_api_key_rules() SET search_path = pg_catalog, %I, pg_temp',
        current_schema()
    );
    EXECUTE format(
        'CREATE POLICY edge_node_sync ON tenant_roles TO %I USING (true) WITH CHECK (true)',
        current_user
    );
    -- Every table that has the setting's policy, whichever migration created it.
    FOR tenant_table IN
        SELECT tablename FROM pg_policies
        WHERE schemaname = current_schema() AND policyname = 'tenant_isolation'
    LOOP
        EXECUTE format(
            'ALTER POLICY tenant_isolation ON %I'
            ' USING (tenant_id = (SELECT edge_node_session_tenant()))'
            ' WITH CHECK (tenant_id = (SELECT edge_node_session_tenant()))',
            tenant_table
        );
    END LOOP;
END
$$;
