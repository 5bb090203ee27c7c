"""A private, throwaway Citus cluster for the tests: a coordinator and two workers.

Citus (the PostgreSQL extension that distributes tables) is built from the source kept beside
the repository by `scripts/ensure-citus.sh` (`make test` runs it) and installed into the same
server binaries as the tests' plain PostgreSQL (tests/postgres.py). The cluster is three of
those throwaway servers, each with `shared_preload_libraries = 'citus'` on its own free
loopback port in its own temporary directory. `wal_level = logical` lets shards move online
(citus_move_shard_placement copies a shard by logical replication). Each test gets fresh
databases of one name on all three nodes, the extension created in each, and the workers
registered with the coordinator: Citus keeps its metadata per database.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from tests.postgres import PostgresServer, PostgresUnavailable, find_bin_dir, start_server

SHARD_COUNT = 4  # few shards keep the cluster's per-test setup and every download small
INSTALL_HINT = (
    "Citus is not installed: as root, `sh scripts/ensure-citus.sh` (run by `make test`) builds "
    "it from ../shared/vendor/citus/"
)
_SETTINGS = {
    "shared_preload_libraries": "'citus'",
    "wal_level": "logical",
    "max_worker_processes": "32",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "citus.shard_count": str(SHARD_COUNT),
    # The maintenance daemon's background work (deferred drops, statistics) keeps to itself.
    "citus.defer_shard_delete_interval": "1000",
}


class CitusUnavailable(Exception):
    """No Citus cluster can be started here; the message says why and what to do."""


def citus_installed() -> bool:
    try:
        return (find_bin_dir().parent / "lib" / "citus.so").is_file()
    except PostgresUnavailable:
        return False


@dataclass
class CitusCluster:
    """A coordinator and its workers; `create_database` makes a distributed database."""

    coordinator: PostgresServer
    workers: list[PostgresServer]
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def nodes(self) -> list[PostgresServer]:
        return [self.coordinator, *self.workers]

    def dsn(self, database: str) -> str:
        """The coordinator's DSN: what an edge node and `central migrate` are given."""
        return self.coordinator.dsn(database)

    def create_database(self) -> str:
        """A database of one name on every node with the extension, the workers added."""
        name = f"citus_{os.getpid()}_{next(self._names)}"
        for node in self.nodes:
            node.sql(f'CREATE DATABASE "{name}"')
            node.sql("CREATE EXTENSION citus", database=name)
        host = "127.0.0.1"
        self.coordinator.sql(
            f"SELECT citus_set_coordinator_host('{host}', {self.coordinator.port})", database=name
        )
        for worker in self.workers:
            self.coordinator.sql(f"SELECT citus_add_node('{host}', {worker.port})", database=name)
        return name

    def drop_database(self, name: str) -> None:
        for node in self.nodes:
            node.drop_database(name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(workers: int = 2) -> CitusCluster:
    """Start a coordinator and `workers` workers, each a throwaway server with Citus loaded."""
    if not citus_installed():
        raise CitusUnavailable(INSTALL_HINT)
    started: list[PostgresServer] = []
    try:
        for role in ["coordinator", *(f"worker{n}" for n in range(workers))]:
            started.append(start_server(_SETTINGS, prefix=f"citus-{role}"))
    except BaseException:
        for server in started:
            server.stop()
        raise
    return CitusCluster(started[0], started[1:])
