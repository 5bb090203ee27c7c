"""Download checkpoints: where a download of one table resumes, as text kept on the edge.

A position says "every row below transaction `xid` has been read, and at `xid` itself every
row whose key is at most `after`" (None: no row at `xid` yet). Rows are read in (change_xid,
key) order and only below the horizon `pg_snapshot_xmin(pg_current_snapshot())`, the oldest
transaction still running: every transaction below it has ended, so no row can later appear
behind a position (docs/sync.md, "Download").

A position also names the central database it belongs to (`database`: the cluster's system
identifier and the database's oid). Transaction ids mean nothing in another database, so a
position from another one (a tenant moved to another shard, a database rebuilt from a dump)
is ignored and the download starts over from the beginning: applying rows again is harmless
under the conflict rule, skipping them would not be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from sync.postgres import translated

if TYPE_CHECKING:
    from sync.postgres import Connection

_VERSION = 1

# One value per database. It survives a crash, a failover to a physical standby and a
# point-in-time restore, each of which can hand out again transaction ids whose WAL was never
# flushed: durable_bound() keeps every stored position below those (migration 0002).
_IDENTITY_SQL = """
    SELECT (SELECT system_identifier FROM pg_control_system())::text || '/'
        || (SELECT oid FROM pg_database WHERE datname = current_database())::text"""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a download of one table resumes in one central database (see the module doc)."""

    database: str
    xid: int
    after: tuple[str, ...] | None = None

    @classmethod
    def start(cls, database: str) -> Position:
        """Before every row of `database`."""
        return cls(database, 0)

    @property
    def is_start(self) -> bool:
        return self.xid == 0 and self.after is None

    def covers(self, other: Position) -> bool:
        """Whether every row below `other` is below this position too (both at a horizon)."""
        return self.after is None and other.after is None and self.xid >= other.xid

    def encode(self) -> str:
        after = None if self.after is None else list(self.after)
        return orjson.dumps(
            {"v": _VERSION, "db": self.database, "xid": self.xid, "after": after}
        ).decode()

    @classmethod
    def decode(cls, text: str | None, database: str) -> Position:
        """The position `text` stands for in `database`; the start for anything else."""
        if text is None:
            return cls.start(database)
        try:
            value = orjson.loads(text)
            if value["v"] != _VERSION or value["db"] != database:
                return cls.start(database)
            xid, after = value["xid"], value["after"]
            if type(xid) is not int or xid < 0:
                return cls.start(database)
            if after is not None and not all(isinstance(part, str) for part in after):
                return cls.start(database)
            return cls(database, xid, None if after is None else tuple(after))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return cls.start(database)

    def after_page(self, last_xid: int, last_key: tuple[str, ...]) -> Position:
        """Resume strictly after the last row of a full page."""
        return Position(self.database, last_xid, last_key)

    def at_horizon(self, horizon: int) -> Position:
        """Every row below `horizon` read: resume at it (never backwards)."""
        if horizon < self.xid or (horizon == self.xid and self.after is not None):
            return self
        return Position(self.database, horizon)

    def key_bound(self, width: int) -> list[str | None]:
        """Query parameters for the key part: the last key read at `xid`, or NULLs."""
        if self.after is None or len(self.after) != width:
            return [None] * width
        return list(self.after)


async def database_identity(connection: Connection) -> str:
    """The identity positions are bound to: `<system identifier>/<database oid>`."""
    with translated("cannot read the central database's identity"):
        identity = await connection.fetchval(_IDENTITY_SQL)
    return str(identity)


_DURABLE_BOUND_SQL = """
    INSERT INTO sync_horizons (node_id, xid) VALUES ($1, pg_current_xact_id())
    ON CONFLICT (node_id) DO UPDATE SET xid = excluded.xid, recorded_at = now()
    RETURNING xid::text"""


async def durable_bound(connection: Connection, node_id: str) -> int:
    """One past a transaction id this server has made durable just now.

    Its commit is flushed (synchronous_commit on), so whatever happens to the server next,
    it never hands out an id at or below it again. Every horizon taken afterwards is capped
    at this bound, so no stored position can be passed by an id handed out twice.
    """
    with translated("recording the download bound"):
        async with connection.transaction():
            xid = await connection.fetchval(_DURABLE_BOUND_SQL, node_id)
    return int(xid) + 1
