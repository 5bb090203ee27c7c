"""The central schema on a Citus cluster: tenant tables distributed by tenant_id, colocated.

`edge-node central migrate` against a Citus coordinator (a database with the `citus`
extension) applies the same SQL migrations as on plain PostgreSQL, then distributes what they
created (docs/sync.md, "Citus"):

- every tenant table, hash-distributed on `tenant_id` and colocated with `tenants`, so one
  tenant's rows of every table sit in one shard group on one worker, and a statement about
  one tenant (an upload, a trigger's cascade, a deletion) runs on that worker alone;
- `tenant_roles` as a reference table: it is no tenant's data, every worker's row-level
  security reads it (edge_node_session_tenant) for every statement, and it is tiny;
- the coordinator's bookkeeping (`schema_migrations`, `sync_horizons`) stays local to it.

Each worker also gets `edge_node_sync_bounds`, a table of its own (not distributed), where a
downloading edge records a durable transaction id of that worker (positions.py explains why a
download needs one per server that stamps change positions). Re-running `migrate` after
`citus_add_node` creates it on the new worker.

Triggers on distributed tables run on the shards; Citus allows them only with
`citus.enable_unsafe_triggers`, which `prepare` sets for the migrating session and for the
database (so operators' sessions and later migrations see it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_node.errors import TransientSyncError
from sync.postgres import translated

if TYPE_CHECKING:
    from sync.postgres import Connection

ANCHOR = "tenants"
# Colocated with ANCHOR, in an order where a foreign key's target comes first.
COLOCATED = (
    "api_keys",
    "ratings",
    "billing_events",
    "tenant_data_keys",
    "tenant_deletions",
    "quota_periods",
    "quota_leases",
)
DISTRIBUTED = (ANCHOR, *COLOCATED)
REFERENCE = ("tenant_roles",)
WORKER_BOUNDS_TABLE = "edge_node_sync_bounds"

_IS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
_DISTRIBUTED_ALREADY = """
    SELECT logicalrelid::regclass::text FROM pg_dist_partition
    WHERE logicalrelid = ANY ($1::text[]::regclass[])"""
# Citus refuses subqueries in the policies of distributed tables; the scalar subquery of 0006
# (the tenant worked out once per statement) becomes a plain call of the STABLE function, which
# an index scan on tenant_id still evaluates once.
_PER_ROW_POLICY = """
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = current_schema()
                   AND tablename = current_setting('edge_node.distributing')
                   AND policyname = 'tenant_isolation') THEN
            EXECUTE format('ALTER POLICY tenant_isolation ON %I'
                ' USING (tenant_id = edge_node_session_tenant())'
                ' WITH CHECK (tenant_id = edge_node_session_tenant())',
                current_setting('edge_node.distributing'));
        END IF;
    END
    $$"""
# On a worker, row-level security of a shard calls edge_node_session_tenant(), which reads
# tenant_roles: a reference table, read from the worker's own placement. Citus refuses any
# query on a distributed table from inside a query on a shard unless this is on; for a read of
# a reference table replicated to the very node, the "nesting" is a local read.
_NESTED_BINDING_READ = """
    ALTER FUNCTION edge_node_session_tenant() SET citus.allow_nested_distributed_execution = on"""
# Logical replication refuses to apply changes to a table whose row-level security applies to
# the subscription's owner. A logical shard move (citus_move_shard_placement with
# force_logical or auto, citus_rebalance_start) subscribes as a role made a member of the
# tables' owner, so a forced policy stops the move for good at the first change written during
# its copy. Not forcing it changes nobody's rows: the owner and its members already see and
# write every row through the `edge_node_sync` policy, and every other role stays subject.
# Only where forced: a run with nothing to change takes no table lock.
_FORCED = """
    SELECT relname::text FROM pg_class
    WHERE oid = ANY ($1::text[]::regclass[]) AND relforcerowsecurity ORDER BY 1"""
_UNFORCED = "ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"
_WORKER_BOUNDS = f"""
    SELECT nodename, nodeport, success, result FROM run_command_on_workers($$
        CREATE TABLE IF NOT EXISTS {WORKER_BOUNDS_TABLE} (
            node_id text PRIMARY KEY,
            xid xid8 NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )$$)"""  # noqa: S608 - a constant table name


async def is_citus(connection: Connection) -> bool:
    """Whether this database is a Citus coordinator's (it has the extension)."""
    with translated("cannot tell whether the database runs Citus"):
        return bool(await connection.fetchval(_IS_CITUS))


async def prepare(connection: Connection) -> None:
    """Let the migrations create triggers on distributed tables (see the module doc)."""
    with translated("enabling triggers on distributed tables"):
        await connection.execute("SET citus.enable_unsafe_triggers = on")
        await connection.execute(
            "DO $$ BEGIN EXECUTE format("
            "'ALTER DATABASE %I SET citus.enable_unsafe_triggers = on', current_database());"
            " END $$"
        )


async def distribute(connection: Connection) -> list[str]:
    """Distribute the tables not distributed yet, create the workers' bound tables; the
    tables distributed now, in order."""
    with translated("distributing the central tables"):
        # A table of a migration not applied yet (a cluster migrated part of the way) waits.
        present = await _present(connection, [*DISTRIBUTED, *REFERENCE])
        done = {name for (name,) in await connection.fetch(_DISTRIBUTED_ALREADY, present)}
        await connection.execute(_NESTED_BINDING_READ)
        now: list[str] = []
        for table in present:
            if table in done:
                continue
            async with connection.transaction():
                await connection.execute(
                    "SELECT set_config('edge_node.distributing', $1, true)", table
                )
                await connection.execute(_PER_ROW_POLICY)
                if table in REFERENCE:
                    await connection.execute("SELECT create_reference_table($1)", table)
                elif table == ANCHOR:
                    await connection.execute(
                        "SELECT create_distributed_table($1, 'tenant_id')", table
                    )
                else:
                    await connection.execute(
                        "SELECT create_distributed_table($1, 'tenant_id', colocate_with => $2)",
                        table,
                        ANCHOR,
                    )
            now.append(table)
        distributed = [table for table in present if table in DISTRIBUTED]
        for (table,) in await connection.fetch(_FORCED, distributed):
            await connection.execute(_UNFORCED.format(table=table))
        for node, port, success, result in await connection.fetch(_WORKER_BOUNDS):
            if not success:
                raise TransientSyncError(
                    f"worker {node}:{port} refused {WORKER_BOUNDS_TABLE}: {result}"
                )
    return now


async def _present(connection: Connection, tables: list[str]) -> list[str]:
    """The `tables` that exist, in their order."""
    rows = await connection.fetch(
        "SELECT name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n)"
        " WHERE to_regclass(name) IS NOT NULL ORDER BY n",
        tables,
    )
    return [row[0] for row in rows]


async def distribution(connection: Connection) -> dict[str, str]:
    """Each distributed or reference table and how: `tenant_id, colocated` or `reference`."""
    with translated("reading the tables' distribution"):
        rows = await connection.fetch(
            "SELECT logicalrelid::regclass::text, partmethod::text FROM pg_dist_partition"
            " WHERE logicalrelid = ANY ($1::text[]::regclass[]) ORDER BY 1",
            await _present(connection, [*DISTRIBUTED, *REFERENCE]),
        )
    return {name: "reference" if method == "n" else "tenant_id" for name, method in rows}
