"""Test support for sync: edge nodes as data directories, central inspection, a TCP proxy
(tests/fault_proxy.py, shared with the system tests)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_node.config import CentralConfig
from edge_node.crypto.key_files import WrappingKey
from edge_node.crypto.keystore import KEYS_DIRECTORY, Keyring
from edge_node.node_database import open_node_database
from edge_node.rating.model import RatingInput
from edge_node.rating.replication import RatingRow
from edge_node.rating.store import TenantStores
from edge_node.rating.tenant_store import TenantStore
from edge_node.tenants.registry import TenantRegistry
from sync.backoff import Backoff
from sync.postgres import Connection
from sync.replication.round_values import EdgeStorage, RoundReport
from sync.worker import SyncWorker
from tests.fault_proxy import TcpProxy

__all__ = ["ROW_COLUMNS", "Edge", "TcpProxy", "central_rows", "central_scores", "rows_hash"]

FLEET_KEY = WrappingKey(bytes(range(32)))
ROW_COLUMNS = (
    "id, tenant_id, user_id, item_id, score, comment_sealed, created_at, updated_at, origin_node,"
    " deleted"
)


@dataclass
class Edge:
    """One edge node's storage in its own data directory, as the daemon opens it."""

    node_id: str
    data_dir: Path
    node_database: sqlite3.Connection
    registry: TenantRegistry
    stores: TenantStores

    @classmethod
    def open(
        cls,
        data_dir: Path,
        node_id: str,
        *,
        fleet_key: WrappingKey | None = FLEET_KEY,
        busy_timeout_ms: int = 5000,
        previous_fleet_key: WrappingKey | None = None,
    ) -> Edge:
        """Each edge has its own master key; by default all share FLEET_KEY, as a fleet does."""
        node_database = open_node_database(data_dir)
        registry = TenantRegistry(node_database)
        keyring = Keyring(
            data_dir / KEYS_DIRECTORY, fleet_key=fleet_key, previous_fleet_key=previous_fleet_key
        )
        stores = TenantStores(
            data_dir / "tenants",
            node_id=node_id,
            keyring=keyring,
            busy_timeout_ms=busy_timeout_ms,
        )
        return cls(node_id, data_dir, node_database, registry, stores)

    def close(self) -> None:
        self.stores.close()
        self.node_database.close()

    def worker(
        self,
        dsns: Sequence[str],
        *,
        interval: float = 0.05,
        batch_size: int = 1000,
        backoff: Backoff | None = None,
        statement_timeout: float = 30.0,
        lock_timeout: float = 5.0,
        horizon_lag_warning: float = 60.0,
        standby_dsns: Sequence[str] = (),
    ) -> SyncWorker:
        central = CentralConfig(
            dsns=tuple(dsns),
            standby_dsns=tuple(standby_dsns),
            sync_interval_seconds=interval,
            batch_size=batch_size,
            lock_timeout_seconds=lock_timeout,
            horizon_lag_warning_seconds=horizon_lag_warning,
        )
        return SyncWorker(
            central,
            EdgeStorage(self.node_database, self.stores),
            node_id=self.node_id,
            data_dir=self.data_dir,
            backoff=backoff,
            connect_timeout=5.0,
            statement_timeout=statement_timeout,
        )

    async def sync(self, *dsns: str, batch_size: int = 1000) -> list[RoundReport]:
        """One round on every shard, raising on failure."""
        worker = self.worker(dsns, batch_size=batch_size)
        try:
            return await worker.run_once()
        finally:
            await worker.stop(grace=0)

    def store(self, tenant_id: str) -> TenantStore:
        return self.stores.get(tenant_id)

    def rate(
        self, tenant_id: str, user_id: str, item_id: str, score: int, comment: str | None = None
    ) -> str:
        rating, _ = self.store(tenant_id).upsert(RatingInput(user_id, item_id, score, comment))
        return rating.id

    def rows(self, tenant_id: str) -> list[tuple[Any, ...]]:
        """Every row of the tenant, tombstones included, as plain tuples in id order."""
        self.store(tenant_id)  # its file exists from its first use, as in the daemon
        with contextlib.closing(sqlite3.connect(self.stores.path(tenant_id))) as conn:
            rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM ratings ORDER BY id").fetchall()
        return [(*row[:9], bool(row[9])) for row in rows]

    def scores(self, tenant_id: str) -> list[tuple[Any, ...]]:
        """The stored aggregates of items with live ratings: (item, count, total, s1..s5)."""
        self.store(tenant_id)
        with contextlib.closing(sqlite3.connect(self.stores.path(tenant_id))) as conn:
            return [
                tuple(row)
                for row in conn.execute(
                    "SELECT item_id, count, total, s1, s2, s3, s4, s5 FROM item_scores"
                    " WHERE count > 0 ORDER BY item_id"
                ).fetchall()
            ]

    def comments(self, tenant_id: str) -> dict[tuple[str, str], str | None]:
        """The tenant's live comments as the API serves them, by (user, item)."""
        page = self.store(tenant_id).page(limit=500)
        return {(r["user_id"], r["item_id"]): r["comment"] for r in page.ratings}

    def pending(self, tenant_id: str) -> list[RatingRow]:
        rows, _ = self.store(tenant_id).pending_changes(100_000)
        return rows


async def central_rows(conn: Connection, tenant_id: str) -> list[tuple[Any, ...]]:
    records = await conn.fetch(
        "SELECT id::text, tenant_id::text, user_id, item_id, score::int, comment_sealed,"
        " created_at, updated_at, origin_node, deleted FROM ratings WHERE tenant_id = $1"
        " ORDER BY id::text",
        tenant_id,
    )
    return [tuple(r) for r in records]


async def central_scores(conn: Connection, tenant_id: str) -> list[tuple[Any, ...]]:
    records = await conn.fetch(
        "SELECT item_id, count::int, total::int, s1::int, s2::int, s3::int, s4::int, s5::int"
        " FROM item_scores WHERE tenant_id = $1 ORDER BY item_id",
        tenant_id,
    )
    return [tuple(r) for r in records]


def rows_hash(rows: Sequence[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest()
