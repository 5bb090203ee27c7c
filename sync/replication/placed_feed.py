"""Change feeds on Citus: read shard by shard, on the worker holding each, with its own horizon.

Each Citus worker stamps `change_xid` with its own transaction ids, so a horizon is only good
for the rows of the server it was taken on. So on Citus a feed is read per shard placement:
the coordinator (the only server an edge connects to) sends each worker, through
`master_run_on_worker`, the feed's one statement (change_feed.py) over that worker's shards,
and the worker answers with its horizon and the page as JSON. Horizon and page still come
from one statement, hence one snapshot, on the very server that stamped the rows.

The checkpoint is a `PlacedPosition`: one part per shard, named by its shard id, each a
position in the xid space of the worker group that held the shard when it was read. A part
whose shard is now on another group (citus_move_shard_placement, a rebalance), or a shard
not seen before (a split), starts again with a scan in key order (change_feed.py): a moved
shard keeps the change positions of its old worker, which mean nothing on the new one.

Each worker's durable bound (positions.py, durable_bound) is recorded on that worker, in its
`edge_node_sync_bounds` (created by `central migrate`), before the horizons it caps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from edge_node.errors import TransientSyncError
from sync.postgres import translated
from sync.replication.change_feed import ChangeFeed, FeedRow
from sync.replication.positions import Position

if TYPE_CHECKING:
    from sync.postgres import Connection

_VERSION = 1

_PLACEMENTS = """
    SELECT s.logicalrelid::regclass::text AS table_name, shard_name(s.logicalrelid, s.shardid)
           AS shard, s.shardid, s.shardminvalue, n.groupid, n.nodename, n.nodeport
    FROM pg_dist_partition d
    JOIN pg_dist_shard s ON s.logicalrelid = d.logicalrelid
    JOIN pg_dist_placement p ON p.shardid = s.shardid
    JOIN pg_dist_node n ON n.groupid = p.groupid
    WHERE d.colocationid = (SELECT colocationid FROM pg_dist_partition
                            WHERE logicalrelid = $1::regclass)
      AND p.shardstate = 1 AND n.isactive AND n.noderole = 'primary'
    ORDER BY s.shardminvalue::int"""

_RUN = """
    SELECT node_name, node_port, success, result
    FROM master_run_on_worker($1::text[], $2::int[], $3::text[], true)"""

# On the worker: the feed's page as JSON, with the horizon of its snapshot.
_AS_JSON = """
    SELECT json_build_object(
        'horizon', min(q.horizon),
        'rows', coalesce(json_agg(to_json(q)) FILTER (WHERE q.position IS NOT NULL), '[]')
    )::text FROM ({page}) q"""

_BOUND = """
    WITH durable AS (SELECT set_config('synchronous_commit', 'on', true))
    INSERT INTO edge_node_sync_bounds (node_id, xid)
    SELECT {node}, pg_current_xact_id() FROM durable
    ON CONFLICT (node_id) DO UPDATE SET xid = excluded.xid, recorded_at = now()
    RETURNING xid::text"""


@dataclass(frozen=True, slots=True)
class ShardPart:
    """Where the read of one shard stands, in the xid space of worker group `group`.

    `scanning`: the shard is still being read in key order from its beginning, `after` the
    last key read and `scan` the horizon of the scan's first page (None before it).
    Otherwise `xid` and `after` as in positions.Position."""

    group: int
    xid: int = 0
    after: tuple[str, ...] | None = None
    scanning: bool = True
    scan: int | None = None

    def encode(self) -> dict[str, Any]:
        after = None if self.after is None else list(self.after)
        return {"g": self.group, "xid": self.xid, "after": after, "scan": self.scan,
                "scanning": self.scanning}  # fmt: skip

    @classmethod
    def decode(cls, value: Mapping[str, Any]) -> ShardPart:
        after = value["after"]
        return cls(
            int(value["g"]),
            int(value["xid"]),
            None if after is None else tuple(str(part) for part in after),
            bool(value["scanning"]),
            None if value["scan"] is None else int(value["scan"]),
        )

    def level(self) -> Position:
        return Position("", self.xid, self.after)


@dataclass(frozen=True)
class PlacedPosition:
    """A feed's checkpoint on Citus: one part per shard id (see the module doc)."""

    database: str
    parts: Mapping[int, ShardPart] = field(default_factory=dict)

    @property
    def is_start(self) -> bool:
        return not self.parts

    def encode(self) -> str:
        parts = {str(shard): part.encode() for shard, part in sorted(self.parts.items())}
        return orjson.dumps({"v": _VERSION, "db": self.database, "shards": parts}).decode()

    @classmethod
    def decode(cls, text: str | None, database: str) -> PlacedPosition:
        """The position `text` stands for in `database`; the start for anything else (a
        position of plain PostgreSQL, of another database, unreadable)."""
        if text is None:
            return cls(database)
        try:
            value = orjson.loads(text)
            if value["v"] != _VERSION or value["db"] != database:
                return cls(database)
            parts = {int(k): ShardPart.decode(v) for k, v in value["shards"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return cls(database)
        return cls(database, parts)

    def covers(self, other: PlacedPosition) -> bool:
        """Whether every row below `other` is below this position too: each of its shards
        read here, on the same group, up to a horizon at least as far."""
        for shard, theirs in other.parts.items():
            mine = self.parts.get(shard)
            if theirs.scanning or theirs.after is not None:
                return False
            if mine is None or mine.group != theirs.group or mine.scanning:
                return False
            if mine.after is not None or mine.xid < theirs.xid:
                return False
        return True


@dataclass(frozen=True)
class _Placement:
    shard: int  # the shard id of the feed's table
    group: int
    host: str
    port: int
    shards: dict[str, str]  # every colocated table at this range: its shard's name


@dataclass
class PlacedReader:
    """Reads change feeds shard by shard on a Citus coordinator's workers (module doc)."""

    connection: Connection
    node_id: str
    bounds: dict[int, int] = field(default_factory=dict)  # worker group: its durable bound

    def forget_bounds(self) -> None:
        self.bounds.clear()

    async def read(
        self, feed: ChangeFeed, since: PlacedPosition, limit: int, tenant_id: str | None = None
    ) -> tuple[list[FeedRow], PlacedPosition, bool]:
        """Up to `limit` rows of each shard after `since`, the position after them, and
        whether any shard had more."""
        placements = await self._placements(feed)
        await self._record_bounds({p.group: (p.host, p.port) for p in placements})
        parts = [self._part(since, p) for p in placements]
        commands = [
            _AS_JSON.format(
                page=feed.placed_sql(
                    p.shards,
                    part.level(),
                    limit,
                    self.bounds[p.group],
                    tenant_id,
                    scan=part.scanning,
                )
            )
            for p, part in zip(placements, parts, strict=True)
        ]
        where = feed.what if tenant_id is None else f"{feed.what} of tenant {tenant_id}"
        answers = await self._run(placements, commands, f"downloading {where}")
        rows: list[FeedRow] = []
        resumed: dict[int, ShardPart] = {}
        more = False
        for p, part, answer in zip(placements, parts, answers, strict=True):
            page = orjson.loads(answer)
            shard_rows = [_row(feed, r) for r in page["rows"]]
            rows.extend(shard_rows)
            more = more or len(shard_rows) >= limit
            resumed[p.shard] = _resume(feed, part, shard_rows, limit, int(page["horizon"]))
        return rows, PlacedPosition(since.database, resumed), more

    def lag(self, position: PlacedPosition) -> tuple[int, int]:
        """(bound, horizon) summed over the worker groups, for the status: their difference
        is how many transaction ids, over every worker, the download stands behind."""
        bound = sum(self.bounds.values())
        reached: dict[int, int] = {}
        for part in position.parts.values():
            xid = 0 if part.scanning else part.xid
            reached[part.group] = min(reached.get(part.group, xid), xid)
        horizon = sum(min(reached.get(g, 0), b) for g, b in self.bounds.items())
        return bound, horizon

    @staticmethod
    def _part(since: PlacedPosition, placement: _Placement) -> ShardPart:
        part = since.parts.get(placement.shard)
        if part is None or part.group != placement.group:
            return ShardPart(placement.group)
        return part

    async def _placements(self, feed: ChangeFeed) -> list[_Placement]:
        table = feed.source.split()[0]
        with translated(f"reading the shard placements of {table}"):
            records = await self.connection.fetch(_PLACEMENTS, table)
        by_range: dict[str, list[Any]] = {}
        for r in records:
            by_range.setdefault(r["shardminvalue"], []).append(r)
        placements = []
        for group in by_range.values():
            main = next(r for r in group if r["table_name"] == table)
            shards = {r["table_name"]: r["shard"] for r in group}
            placements.append(
                _Placement(
                    main["shardid"], main["groupid"], main["nodename"], main["nodeport"], shards
                )
            )
        return placements

    async def _record_bounds(self, groups: dict[int, tuple[str, int]]) -> None:
        """Record the durable bound of each group that has none this round."""
        missing = [(g, where) for g, where in groups.items() if g not in self.bounds]
        if not missing:
            return
        command = _BOUND.format(node="'" + self.node_id.replace("'", "''") + "'")
        hosts = [_Placement(0, g, host, port, {}) for g, (host, port) in missing]
        answers = await self._run(hosts, [command] * len(hosts), "recording the download bounds")
        for (group, _), xid in zip(missing, answers, strict=True):
            self.bounds[group] = int(xid) + 1

    async def _run(
        self, placements: Sequence[_Placement], commands: list[str], context: str
    ) -> list[str]:
        with translated(context):
            records = await self.connection.fetch(
                _RUN, [p.host for p in placements], [p.port for p in placements], commands
            )
        answers = []
        for r in records:
            if not r["success"]:
                raise TransientSyncError(
                    f"{context}: {r['node_name']}:{r['node_port']}: {r['result']}"
                )
            answers.append(str(r["result"]))
        return answers


def _row(feed: ChangeFeed, value: dict[str, Any]) -> dict[str, Any]:
    for name in feed.binary:
        text = value.get(name)
        if isinstance(text, str):
            value[name] = bytes.fromhex(text[2:])  # bytea in JSON: \x followed by hex
    return value


def _resume(
    feed: ChangeFeed, part: ShardPart, rows: list[dict[str, Any]], limit: int, horizon: int
) -> ShardPart:
    last_key = tuple(str(rows[-1][name]) for name, _ in feed.key) if rows else None
    if part.scanning:
        scan = horizon if part.scan is None else part.scan
        if len(rows) < limit:  # scanned to the end: on with the feed from the scan's horizon
            return ShardPart(part.group, scan, None, scanning=False)
        return ShardPart(part.group, 0, last_key, scanning=True, scan=scan)
    level = part.level()
    if len(rows) < limit:
        level = level.at_horizon(horizon)
    else:
        assert last_key is not None
        level = level.after_page(int(rows[-1]["position"]), last_key)
    return ShardPart(part.group, level.xid, level.after, scanning=False)
