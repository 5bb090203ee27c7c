"""Where one round reads its change feeds: one PostgreSQL server, or a Citus cluster's workers.

A round reads every feed through `Downloads`, whatever the central database is, so the round,
the replicated tables and the ratings transfer are one code path:

- on plain PostgreSQL each feed is one statement on the server (change_feed.py) below the
  round's durable bound, and a checkpoint is a `Position`;
- on a Citus coordinator (the `citus` extension is there) each feed is read shard by shard on
  the workers, each below its own worker's durable bound (placed_feed.py), and a checkpoint
  is a `PlacedPosition`, one part per shard.

A checkpoint of one kind read back by the other is the start: a database that becomes a Citus
coordinator is downloaded again from the beginning, which the conflict rule makes harmless.

On plain PostgreSQL the feeds may be read from a hot standby of the server (`reader`,
central.standby_dsns): the same statement, whose horizon is then the oldest transaction the
standby's own snapshot sees running as of what it has replayed, so the rule holds there as on
the primary. The durable bound is still written on the primary (a standby takes no writes);
a standby behind it only yields a lower horizon. Positions are the same on both: a standby
has the primary's system identifier and database oids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from edge_node.errors import ConfigError
from sync.postgres import translated
from sync.replication.placed_feed import PlacedPosition, PlacedReader
from sync.replication.positions import Position, durable_bound

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.change_feed import ChangeFeed, FeedRow

FeedPosition: TypeAlias = Position | PlacedPosition

_IS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
# 0 while the standby has replayed everything it received; else the age of the last
# transaction it replayed (so an idle primary does not read as lag).
_STANDBY_LAG = """
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN NULL
        WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
        ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
    END::float8"""


@dataclass
class Downloads:
    """The download side of one round on one central database (see the module doc)."""

    connection: Connection
    node_id: str
    database: str  # the name checkpoints carry (shard_state.checkpoint_database)
    placed: PlacedReader | None = None  # set on a Citus coordinator
    reader: Connection | None = None  # a hot standby the feeds are read from, if any
    bound: int | None = None  # plain PostgreSQL: the round's durable bound, once recorded

    @classmethod
    async def open(
        cls,
        connection: Connection,
        node_id: str,
        database: str,
        reader: Connection | None = None,
    ) -> Downloads:
        with translated("cannot tell whether the central database runs Citus"):
            citus = bool(await connection.fetchval(_IS_CITUS))
        if citus and reader is not None:
            raise ConfigError(
                "central.standby_dsns: downloads from a standby are for plain PostgreSQL"
                " shards; a Citus coordinator's downloads are read on its workers"
            )
        placed = PlacedReader(connection, node_id) if citus else None
        return cls(connection, node_id, database, placed, reader)

    def decode(self, text: str | None) -> FeedPosition:
        if self.placed is not None:
            return PlacedPosition.decode(text, self.database)
        return Position.decode(text, self.database)

    def start(self) -> FeedPosition:
        return self.decode(None)

    def forget_bound(self) -> None:
        """The next read records a fresh durable bound (past this round's uploads)."""
        self.bound = None
        if self.placed is not None:
            self.placed.forget_bounds()

    async def read(
        self,
        feed: ChangeFeed,
        since: FeedPosition,
        limit: int,
        tenant_id: str | None = None,
    ) -> tuple[list[FeedRow], FeedPosition, bool]:
        """Up to `limit` rows (per shard on Citus) after `since` and below the horizon, the
        position after them, and whether there are more to read now."""
        if self.placed is not None:
            assert isinstance(since, PlacedPosition)
            return await self.placed.read(feed, since, limit, tenant_id)
        assert isinstance(since, Position)
        if self.bound is None:
            self.bound = await durable_bound(self.connection, self.node_id)
        source = self.connection if self.reader is None else self.reader
        rows, position = await feed.read(source, since, limit, self.bound, tenant_id)
        return list(rows), position, len(rows) >= limit

    def lag(self, position: FeedPosition) -> tuple[int | None, int | None]:
        """(bound, horizon) of a download that reached `position`, for the status."""
        if self.placed is not None:
            assert isinstance(position, PlacedPosition)
            return self.placed.lag(position)
        assert isinstance(position, Position)
        return self.bound, position.xid

    async def standby_lag(self) -> float | None:
        """How far the standby the feeds are read from is behind (module doc); None without."""
        if self.reader is None:
            return None
        with translated("reading the standby's replay lag"):
            lag = await self.reader.fetchval(_STANDBY_LAG)
        return None if lag is None else round(max(0.0, float(lag)), 3)
