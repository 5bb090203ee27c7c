-- 0002: a durable upper bound for download checkpoints.
--
-- After a crash, a failover to an asynchronous standby or a point-in-time restore,
-- PostgreSQL resumes handing out transaction ids from the last one its WAL made durable:
-- ids used by transactions whose WAL was never flushed (an insert refused after the
-- change-position trigger stamped it, an asynchronously committed writer) are handed out
-- again. A download horizon (pg_snapshot_xmin) may already be past such an id, and a row
-- later written under it would sit behind every edge's checkpoint, skipped forever.
--
-- So before each round's downloads an edge writes its row here in a transaction committed
-- with synchronous_commit on (sync/postgres.connect makes sure of that): its xid B is then
-- durable, every id at or below B is never handed out again, and the round caps every
-- horizon at B + 1 (sync/positions.durable_bound). One small write per node and round.
--
-- Not tenant data: no tenant_id, no row-level security. On Citus keep it a local table of the
-- coordinator (the transaction ids it records are the coordinator's).
CREATE TABLE sync_horizons (
    node_id text PRIMARY KEY,
    xid xid8 NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
