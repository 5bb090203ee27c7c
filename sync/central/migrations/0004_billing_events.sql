-- 0004: Stripe billing events, replicated through the central database to every edge.
--
-- A Stripe webhook reaches one edge node. That node applies the event (docs/billing.md,
-- "Webhooks") and uploads it here: its id, its tenant, the state it asks for (`target`),
-- Stripe's `created` (the ordering information) and the subscription it is about. Every edge
-- downloads the events of the tenants it holds and applies each through the same rule, once
-- per event id (its webhook_events), so all edges converge on the state one node receiving
-- every event would reach: the rule's outcome does not depend on the order events arrive in.
-- Events are facts, never updated: an edge uploads with ON CONFLICT DO NOTHING, so Stripe
-- delivering one event to two nodes leaves one row.
--
-- Like every table here: tenant_id leads the key (Citus: distribute on tenant_id, colocated
-- with tenants), change_xid is stamped by the trigger of 0001 and read under the snapshot
-- horizon, and row-level security isolates tenants with the sync role exempt. No foreign key
-- to tenants, as for ratings: an edge may hold events of a tenant whose row has not reached
-- this database yet, and refusing them would lose them.
--
-- The Stripe customer id travels in tenants.stripe_customer_id (0001): an edge that provisions
-- a tenant fills it in when it is still NULL, never replaces it, and every edge takes it.

CREATE TABLE billing_events (
    tenant_id uuid NOT NULL,
    event_id text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    type text NOT NULL CHECK (length(type) BETWEEN 1 AND 255),
    created bigint NOT NULL,
    customer_id text CHECK (customer_id IS NULL OR length(customer_id) <= 255),
    subscription_id text CHECK (subscription_id IS NULL OR length(subscription_id) <= 255),
    target text NOT NULL CHECK (target IN ('active', 'past_due', 'canceled')),
    origin_node text NOT NULL CHECK (length(origin_node) BETWEEN 1 AND 63),
    change_xid xid8 NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX billing_events_changes ON billing_events (change_xid, tenant_id, event_id);

CREATE TRIGGER billing_events_change_xid BEFORE INSERT OR UPDATE ON billing_events
    FOR EACH ROW EXECUTE FUNCTION edge_node_stamp_change_xid();

ALTER TABLE billing_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_events
    USING (tenant_id = NULLIF(current_setting('edge_node.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('edge_node.tenant_id', true), '')::uuid);
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY edge_node_sync ON billing_events TO %I USING (true) WITH CHECK (true)',
        current_user
    );
END
$$;
