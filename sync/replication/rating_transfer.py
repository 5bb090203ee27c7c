"""Moving one shard's ratings in a round: upload the tenants with pending writes, download the
shard's changes since one checkpoint, and catch up tenants the shard checkpoint does not cover.

The event loop also serves requests, so the work here is bounded per loop turn: only tenants
listed as pending upload (edge_node/rating/pending.py) are opened to upload; downloads ask once
per shard for every tenant's changes (sync/replication/shard_state.py), so only tenants with
changes are opened; and downloaded rows are applied `APPLY_CHUNK_ROWS` at a time, each chunk its
own short local transaction, yielding to the loop in between. Applying a row twice is harmless (it
loses to itself under the conflict rule), so a checkpoint stored after its rows, never before, is
all the atomicity needed.

A tenant whose upload, apply or catch-up fails on something of its own is recorded in
`TenantFailures` and the others go on (sync/replication/tenant_failures.py); a tenant whose
downloaded rows failed to apply leaves the shard's joined set before the shard checkpoint passes
them, so it catches them up on its own later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_node.clock import now_us
from edge_node.rating.replication import RatingRow
from sync.replication import shard_state
from sync.replication.downloads import Downloads, FeedPosition
from sync.replication.placed_feed import PlacedPosition
from sync.replication.positions import Position
from sync.replication.ratings import download_ratings, download_shard_ratings, upload_ratings
from sync.replication.round_values import EdgeStorage, RoundReport
from sync.replication.set_aside import send_or_set_aside
from sync.replication.tenant_failures import TenantFailures, is_tenant_failure

if TYPE_CHECKING:
    from sync.postgres import Connection

APPLY_CHUNK_ROWS = 250


@dataclass
class RatingTransfer:
    """The ratings part of one round on shard `index` (see the module doc)."""

    connection: Connection
    downloads: Downloads
    index: int
    edge: EdgeStorage
    batch_size: int
    report: RoundReport
    failures: TenantFailures
    set_aside: Callable[[str, Sequence[tuple[object, str]]], None]
    # The shard download's (durable bound, horizon reached), for the status.
    lag: tuple[int | None, int | None] = (None, None)
    _joined: set[str] = field(default_factory=set)

    async def upload(self, tenant_ids: Sequence[str]) -> None:
        """Upload the outbox of every tenant of `tenant_ids` listed as pending."""
        mine = set(tenant_ids)
        now = now_us()
        for tenant_id in self.edge.stores.pending_tenants():
            if tenant_id in mine and self.failures.may_try(tenant_id, now):
                await self._isolated(tenant_id, self._upload_tenant(tenant_id))

    async def _upload_tenant(self, tenant_id: str) -> None:
        while True:
            rows, up_to_seq = self.edge.stores.get(tenant_id).pending_changes(self.batch_size)
            if up_to_seq == 0:
                self.edge.stores.get(tenant_id).unlist_if_idle()
                return
            if rows:  # entries whose rating no longer exists have nothing to send
                _, refused = await send_or_set_aside(self._send, rows)
                self.set_aside("rating", refused)
            self.edge.stores.get(tenant_id).acknowledge_uploaded(up_to_seq)
            self.report.uploaded += len(rows)

    async def _send(self, rows: Sequence[RatingRow]) -> int:
        return await upload_ratings(self.connection, rows)

    async def download(self, tenant_ids: Sequence[str], database: str) -> None:
        """The shard's changes for the tenants of `tenant_ids`, then the catch-up of those the
        shard checkpoint does not cover yet."""
        conn = self.edge.node_database
        self._joined = shard_state.joined_tenants(conn, self.index, database)
        position = self.downloads.decode(shard_state.shard_checkpoint(conn, self.index))
        from_start = position.is_start
        known = set(tenant_ids)
        failed: set[str] = set()
        while True:
            started = position.is_start
            rows, position, more = await download_shard_ratings(
                self.downloads, position, self.batch_size
            )
            failed |= await self._apply_page(rows, known)
            if failed & self._joined:  # before the checkpoint passes their rows
                self._joined -= failed
                shard_state.set_joined_tenants(conn, self.index, database, self._joined)
            # An empty page is not stored (it costs one index probe next round), unless it is
            # the first: on Citus, the end of each shard's first scan (placed_feed.py).
            if rows or (started and not position.is_start):
                shard_state.set_shard_checkpoint(conn, self.index, position.encode())
            if not more:
                break
        self.lag = self.downloads.lag(position)
        if from_start:  # the download covered everything, for every tenant known before it
            self._join(database, known - failed)
        for tenant_id in tenant_ids:
            if tenant_id not in self._joined and tenant_id not in failed:
                await self._catch_up(tenant_id, database, position)

    async def _apply_page(self, rows: Sequence[RatingRow], known: set[str]) -> set[str]:
        """Apply a shard page to the tenants of `known`; the tenants that failed."""
        by_tenant: dict[str, list[RatingRow]] = {}
        for row in rows:
            if row.tenant_id in known:  # a tenant this node does not hold is not created
                by_tenant.setdefault(row.tenant_id, []).append(row)
        self.report.downloaded += len(rows)
        failed: set[str] = set()
        for tenant_id, tenant_rows in by_tenant.items():
            if not await self._isolated(tenant_id, self._apply(tenant_id, tenant_rows)):
                failed.add(tenant_id)
        return failed

    async def _apply(self, tenant_id: str, rows: Sequence[RatingRow], checkpoint: str = "") -> None:
        """Apply `rows` a chunk per loop turn; with `checkpoint`, store it with the last chunk."""
        for start in range(0, len(rows), APPLY_CHUNK_ROWS):
            chunk = rows[start : start + APPLY_CHUNK_ROWS]
            store = self.edge.stores.get(tenant_id)  # again each turn: it may have been evicted
            last = start + APPLY_CHUNK_ROWS >= len(rows)
            if checkpoint and last:
                self.report.applied += store.set_download_checkpoint(checkpoint, chunk)
            else:
                self.report.applied += store.apply_remote(chunk)
            await asyncio.sleep(0)

    async def _catch_up(self, tenant_id: str, database: str, shard: FeedPosition) -> None:
        """Download one tenant on its own from its own checkpoint; join it once it is level
        with the shard download (every row below the shard's horizon read)."""
        if not self.failures.may_try(tenant_id, now_us()):
            return
        reached: list[FeedPosition] = []
        downloaded = await self._isolated(tenant_id, self._download_tenant(tenant_id, reached))
        if downloaded and _covers(reached[0], shard):
            self._join(database, {tenant_id})

    async def _download_tenant(self, tenant_id: str, reached: list[FeedPosition]) -> None:
        position = self.downloads.decode(self.edge.stores.get(tenant_id).download_checkpoint())
        while True:
            rows, position, more = await download_ratings(
                self.downloads, tenant_id, position, self.batch_size
            )
            if rows:
                await self._apply(tenant_id, rows, checkpoint=position.encode())
                self.report.downloaded += len(rows)
            if not more:
                reached.append(position)
                return

    def _join(self, database: str, tenants: set[str]) -> None:
        if tenants - self._joined:
            self._joined |= tenants
            shard_state.set_joined_tenants(
                self.edge.node_database, self.index, database, self._joined
            )

    async def _isolated(self, tenant_id: str, work: Awaitable[None]) -> bool:
        """Run one tenant's work; a failure of its own is recorded and False returned,
        anything else propagates (it fails the round)."""
        try:
            await work
        except Exception as exc:
            if not is_tenant_failure(exc, self.connection.is_closed()):
                raise
            self.failures.failed(tenant_id, exc)
            return False
        self.failures.succeeded(tenant_id)
        return True


def _covers(level: FeedPosition, shard: FeedPosition) -> bool:
    """Whether a tenant read up to `level` has every row of it below the shard's `shard`."""
    if isinstance(level, Position) and isinstance(shard, Position):
        return level.covers(shard)
    if isinstance(level, PlacedPosition) and isinstance(shard, PlacedPosition):
        return level.covers(shard)
    return False
