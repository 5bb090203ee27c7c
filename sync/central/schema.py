"""The central PostgreSQL schema: numbered SQL migrations in sync/central/migrations/, each applied
once.

A migration is a file `NNNN_name.sql` shipped with the package. `migrate` applies those a
database has not recorded in `schema_migrations`, in order, each in its own transaction that
first takes a transaction-level advisory lock: two nodes migrating the same database at once
take turns, and the second finds the work done. Re-running is a no-op. A recorded migration
whose file has changed since is refused (its checksum is recorded), because the database no
longer matches what the code believes it holds.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_node.errors import PermanentSyncError
from sync.central import citus
from sync.postgres import on_each_database, server_version_num, translated

if TYPE_CHECKING:
    from sync.postgres import Connection

MINIMUM_SERVER_VERSION = 150000  # 15: security_invoker views; xid8 positions need 13
# Any fixed 64-bit number, shared by every edge-node: "edgenode" in ASCII.
MIGRATION_LOCK = int.from_bytes(b"edgenode", "big")
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in sync/central/migrations/, by version: distinct, from 1 up (a number
    may be missing while it is reserved for a migration not shipped yet)."""
    folder = importlib.resources.files("sync.central") / "migrations"
    migrations = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is not None:
            sql = entry.read_text(encoding="utf-8")
            migrations.append(Migration(int(match[1]), match[2], sql))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise AssertionError(f"migration versions must be distinct, from 1 up: {versions}")
    return tuple(migrations)


async def migrate(
    connection: Connection, migrations: Sequence[Migration] | None = None
) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now, in order."""
    version = await server_version_num(connection)
    if version < MINIMUM_SERVER_VERSION:
        raise PermanentSyncError(
            f"the central database needs PostgreSQL 15 or newer, this server is {version}"
        )
    applied: list[int] = []
    on_citus = await citus.is_citus(connection)
    if on_citus:
        await citus.prepare(connection)
    # Held for the whole run (each migration's transaction takes it again), so one of two
    # nodes migrating at once applies every migration and the other finds them all done,
    # rather than the two taking turns migration by migration.
    with translated("taking the migration lock"):
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        for migration in load_migrations() if migrations is None else migrations:
            if await _apply(connection, migration):
                applied.append(migration.version)
        if on_citus:
            await citus.distribute(connection)
    finally:
        with translated("releasing the migration lock"):
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


async def _apply(connection: Connection, migration: Migration) -> bool:
    """Apply one migration unless recorded; False when another run already applied it."""
    label = f"migration {migration.version:04d}_{migration.name}"
    with translated(label):
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute(_BOOKKEEPING)
            recorded = await connection.fetchval(
                "SELECT checksum FROM schema_migrations WHERE version = $1", migration.version
            )
            if recorded is not None:
                if recorded != migration.checksum:
                    raise PermanentSyncError(
                        f"{label} was applied from a different text than this release ships; "
                        "released migrations must never change"
                    )
                return False
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    return True


async def schema_version(connection: Connection) -> int:
    """The newest migration applied to this database; 0 when none is."""
    with translated("cannot read the schema version"):
        exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        value = await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(value)


async def migrate_dsns(dsns: Sequence[str]) -> list[dict[str, Any]]:
    """Migrate each database in turn (one per shard); one JSON-ready report per database."""

    async def run(connection: Connection) -> dict[str, Any]:
        applied = await migrate(connection)
        report: dict[str, Any] = {"applied": applied, "version": await schema_version(connection)}
        if await citus.is_citus(connection):
            report["distributed"] = await citus.distribution(connection)
        return report

    return await on_each_database(dsns, run)
