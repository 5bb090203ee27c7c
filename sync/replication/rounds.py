"""One sync round against one shard: upload this node's changes, then download the shard's.

Order within a round: the replicated tables of `replicated_tables`, in their order, each up
then down (replicated_table.py): tenant deletions, data keys (when this node has a fleet key),
the registry's tenants (its upload carries keys too), API keys, billing events; then the
ratings outboxes up, a fresh durable bound, and the shard's rating changes down
(rating_transfer.py). Key material comes first, so a tenant deleted anywhere is shredded here
before the registry or ratings could bring it back, and a data key is central before the
ratings it seals. Each table is uploaded before it is downloaded, so this node's own writes
are in the central database before it asks what changed there. The registry comes down
before any rating moves: a tenant created centrally gets its ratings in the same round, and
a revocation or suspension is not held back by a ratings upload that keeps failing (a backlog
timing out, one tenant's batch refused by a transient error): it reaches this node whenever
the shard answers the registry's few statements.

Every upload batch is one central transaction, and its outbox entries are acknowledged only
after that COMMIT returned: a failure anywhere before leaves them queued for the next round,
and a batch sent twice (COMMIT done, acknowledgement lost) changes nothing the second time.
Downloaded rows are applied before the checkpoint that passes them is stored.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_node.clock import now_us
from sync.replication.billing_events import billing_events
from sync.replication.data_keys import data_keys, tenant_deletions
from sync.replication.downloads import Downloads
from sync.replication.positions import database_identity
from sync.replication.rating_transfer import RatingTransfer
from sync.replication.registry import registry_keys, registry_tenants
from sync.replication.replicated_table import ReplicatedTable, Row, Upload
from sync.replication.round_values import EdgeStorage, RoundReport
from sync.replication.set_aside import SetAsideLog, send_or_set_aside
from sync.replication.shard_state import checkpoint_database
from sync.replication.tenant_failures import TenantFailures
from sync.shards import shard_for

if TYPE_CHECKING:
    from sync.postgres import Connection


def replicated_tables(edge: EdgeStorage, database: str) -> list[ReplicatedTable[Any]]:
    """The tables a round moves before ratings, in the order it moves them (module doc).
    A new replicated table is one more entry here."""
    return [
        tenant_deletions(edge),
        data_keys(edge, database),
        registry_tenants(edge),
        registry_keys(edge),
        billing_events(edge),
    ]


@dataclass
class ShardRound:
    """One round on shard `index` of `count`, over an open connection to it."""

    connection: Connection
    index: int
    count: int
    edge: EdgeStorage
    batch_size: int
    set_aside: SetAsideLog
    failures: TenantFailures = field(default_factory=TenantFailures)
    report: RoundReport = field(default_factory=RoundReport)
    # Every download stays below a durable bound (positions.durable_bound; one per worker on
    # Citus): recorded at the round's first download, and again before the rating downloads.
    downloads: Downloads | None = None
    reader: Connection | None = None  # a hot standby to read downloads from (downloads.py)

    async def run(self) -> RoundReport:
        database = await self.database()
        downloads = await self.open_downloads(database)
        for table in replicated_tables(self.edge, database):
            if table.enabled:
                await self.replicate(table, database)
        tenant_ids = self.tenant_ids()
        ratings = self.ratings(downloads)
        await ratings.upload(tenant_ids)
        downloads.forget_bound()  # a fresh bound, past this round's uploads: they come back now
        self.report.bound_at = now_us()
        await ratings.download(tenant_ids, database)
        self.report.bound, self.report.horizon = ratings.lag
        self.report.standby_lag_seconds = await downloads.standby_lag()
        self.report.tenants = len(tenant_ids)
        return self.report

    async def open_downloads(self, database: str) -> Downloads:
        if self.downloads is None or self.downloads.database != database:
            node_id = self.edge.stores.node_id
            self.downloads = await Downloads.open(self.connection, node_id, database, self.reader)
        return self.downloads

    async def database(self) -> str:
        """The central database's name in this node's checkpoints
        (sync/replication/shard_state.py)."""
        identity = await database_identity(self.connection)
        return checkpoint_database(self.edge.node_database, self.index, identity)

    def ratings(self, downloads: Downloads) -> RatingTransfer:
        return RatingTransfer(
            self.connection,
            downloads,
            self.index,
            self.edge,
            self.batch_size,
            self.report,
            self.failures,
            self._set_aside,
        )

    def tenant_ids(self) -> list[str]:
        """The tenants of this node's registry that live on this shard."""
        return [t.tenant_id for t in self.edge.registry.list_tenants() if self.owns(t.tenant_id)]

    def owns(self, tenant_id: str) -> bool:
        return shard_for(tenant_id, self.count) == self.index

    async def replicate(self, table: ReplicatedTable[Any], database: str) -> None:
        """`table` up, then down (replicated_table.py), once what of it waited for the tables
        before is applied."""
        if table.apply_waiting is not None:
            self._count_applied(table, table.apply_waiting())
        await self.upload(table)
        await self.download(table, database)

    async def upload(self, table: ReplicatedTable[Row]) -> None:
        """This node's pending rows of `table` for the shard's tenants, up."""
        up = table.upload
        if up is None:
            return
        rows = [row for row in up.pending() if self.owns(up.tenant(row))]
        for batch in up.batches(rows, self.batch_size):
            changed = await self._send(up, batch)
            up.acknowledge(batch)
            if table.reported:
                self.report.registry_uploaded += changed

    async def download(self, table: ReplicatedTable[Any], database: str) -> None:
        """Every page of `table`'s changes after its checkpoint on this shard, the shard's
        tenants' rows applied with the page's checkpoint."""
        checkpoint = f"{table.name}.shard-{self.index}"
        downloads = await self.open_downloads(database)
        position = downloads.decode(table.read_checkpoint(checkpoint))
        while True:
            started = position.is_start
            records, position, more = await downloads.read(table.feed, position, self.batch_size)
            # An empty page is not worth a write (and an fsync), unless it is the first.
            if records or (started and not position.is_start):
                mine = [r for r in records if self.owns(r["tenant_id"])]
                self._count_applied(table, table.apply(mine, (checkpoint, position.encode())))
            if not more:
                return

    async def _send(self, up: Upload[Row], batch: Sequence[Row]) -> int:
        send = functools.partial(up.send, self.connection)
        if up.set_aside_as is None:
            return await send(batch)
        changed, refused = await send_or_set_aside(send, batch)
        self._set_aside(up.set_aside_as, refused)
        return changed

    def _count_applied(self, table: ReplicatedTable[Any], applied: int) -> None:
        if table.reported:
            self.report.registry_applied += applied

    def _set_aside(self, kind: str, refused: Sequence[tuple[object, str]]) -> None:
        self.set_aside.record(kind, self.index, refused)
        self.report.set_aside += len(refused)
