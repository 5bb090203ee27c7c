"""One sync round against one shard: upload this node's changes, then download the shard's.

Order within a round: registry up, registry down, the ratings outboxes up, the shard's
rating changes down (sync/replication/rating_transfer.py). Each table is uploaded before it is
downloaded, so this node's own writes are in the central database before it asks what
changed there. The registry comes down before any rating moves: a tenant created centrally
gets its ratings in the same round, and a revocation or suspension is not held back by a
ratings upload that keeps failing (a backlog timing out, one tenant's batch refused by a
transient error): it reaches this node whenever the shard answers the registry's few
statements.

Every upload batch is one central transaction, and its outbox entries are acknowledged only
after that COMMIT returned: a failure anywhere before leaves them queued for the next round,
and a batch sent twice (COMMIT done, acknowledgement lost) changes nothing the second time.
Downloaded rows are applied before the checkpoint that passes them is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_node.clock import now_us
from edge_node.tenants.model import RegistryChange
from edge_node.tenants.shared_events import BillingReplica, SharedBillingEvent
from sync.replication.billing_events import download_billing_events, upload_billing_events
from sync.replication.data_keys import exchange_key_material
from sync.replication.positions import Position, database_identity, durable_bound
from sync.replication.rating_transfer import RatingTransfer
from sync.replication.registry import download_keys, download_tenants, upload_registry
from sync.replication.round_values import EdgeStorage, RoundReport
from sync.replication.set_aside import SetAsideLog, send_or_set_aside
from sync.replication.shard_state import checkpoint_database
from sync.replication.tenant_failures import TenantFailures
from sync.shards import shard_for

if TYPE_CHECKING:
    from sync.postgres import Connection


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
    # Every download stays below this (positions.durable_bound): recorded before the registry
    # downloads, and again before the rating downloads.
    bound: int | None = None

    async def run(self) -> RoundReport:
        database = await self.database()
        await exchange_key_material(self, database)  # deletions and data keys first
        await self.upload_registry()
        await self.download_registry(database)
        await self.sync_billing_events(database)
        tenant_ids = self.tenant_ids()
        ratings = self.ratings()
        await ratings.upload(tenant_ids)
        self.bound = None  # a fresh bound, past this round's uploads, so they come back now
        self.report.bound_at = now_us()
        self.report.bound = await self.download_bound()
        await ratings.download(tenant_ids, database, self.report.bound)
        self.report.horizon = ratings.horizon
        self.report.tenants = len(tenant_ids)
        return self.report

    async def database(self) -> str:
        """The central database's name in this node's checkpoints
        (sync/replication/shard_state.py)."""
        identity = await database_identity(self.connection)
        return checkpoint_database(self.edge.registry.connection, self.index, identity)

    def ratings(self) -> RatingTransfer:
        return RatingTransfer(
            self.connection,
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

    async def upload_registry(self) -> None:
        changes = [c for c in self.edge.registry.pending_uploads() if self.owns(c.tenant.tenant_id)]
        for start in range(0, len(changes), self.batch_size):
            batch = changes[start : start + self.batch_size]
            changed, refused = await send_or_set_aside(self._send_registry, batch)
            self._set_aside("registry", refused)
            self.edge.registry.acknowledge_uploads(batch)
            self.report.registry_uploaded += changed

    async def download_bound(self) -> int:
        """The round's durable bound, recorded at the first download of the round."""
        if self.bound is None:
            self.bound = await durable_bound(self.connection, self.edge.stores.node_id)
        return self.bound

    async def download_registry(self, database: str) -> None:
        await self._download_tenants(database)
        await self._download_keys(database)

    async def _download_tenants(self, database: str) -> None:
        registry = self.edge.registry
        name = f"registry.tenants.shard-{self.index}"
        position = Position.decode(registry.sync_checkpoint(name), database)
        while True:
            tenants, position = await download_tenants(
                self.connection, position, self.batch_size, await self.download_bound()
            )
            if tenants:  # like ratings: an empty page is not worth a write (and an fsync)
                mine = [t for t in tenants if self.owns(t.tenant_id)]
                self.report.registry_applied += registry.apply_remote(
                    mine, [], checkpoint=(name, position.encode())
                )
            if len(tenants) < self.batch_size:
                return

    async def _download_keys(self, database: str) -> None:
        registry = self.edge.registry
        name = f"registry.keys.shard-{self.index}"
        position = Position.decode(registry.sync_checkpoint(name), database)
        while True:
            pairs, position = await download_keys(
                self.connection, position, self.batch_size, await self.download_bound()
            )
            if pairs:
                mine = [(key, tenant) for key, tenant in pairs if self.owns(key.tenant_id)]
                owners = {tenant.tenant_id: tenant for _, tenant in mine}
                self.report.registry_applied += registry.apply_remote(
                    list(owners.values()),
                    [key for key, _ in mine],
                    checkpoint=(name, position.encode()),
                )
            if len(pairs) < self.batch_size:
                return

    async def sync_billing_events(self, database: str) -> None:
        """Stripe events up and down (sync/replication/billing_events.py), right after the
        registry, so a tenant's billing state follows it to every edge within the same round."""
        replica = BillingReplica(self.edge.registry.connection)
        self.report.registry_applied += replica.apply_waiting()  # their tenant came down
        pending = [e for e in replica.pending_uploads() if self.owns(e.tenant_id)]
        for start in range(0, len(pending), self.batch_size):
            events = pending[start : start + self.batch_size]
            changed, refused = await send_or_set_aside(self._send_billing_events, events)
            self._set_aside("billing_event", refused)
            replica.acknowledge_uploads(events)
            self.report.registry_uploaded += changed
        name = f"billing.events.shard-{self.index}"
        position = Position.decode(self.edge.registry.sync_checkpoint(name), database)
        while True:
            events, position = await download_billing_events(
                self.connection, position, self.batch_size, await self.download_bound()
            )
            if events:
                mine = [e for e in events if self.owns(e.tenant_id)]
                self.report.registry_applied += replica.apply_downloaded(
                    mine, checkpoint=(name, position.encode())
                )
            if len(events) < self.batch_size:
                return

    async def _send_billing_events(self, events: Sequence[SharedBillingEvent]) -> int:
        return await upload_billing_events(self.connection, events, self.edge.stores.node_id)

    async def _send_registry(self, changes: Sequence[RegistryChange]) -> int:
        return await upload_registry(self.connection, changes)

    def _set_aside(self, kind: str, refused: Sequence[tuple[object, str]]) -> None:
        self.set_aside.record(kind, self.index, refused)
        self.report.set_aside += len(refused)
