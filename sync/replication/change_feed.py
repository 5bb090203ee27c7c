"""A replicated table's change feed: its central rows changed after a position, a page at a time.

Every table that comes down from the central database is read by the one query built here:
the rows whose `change_xid` lies after a position (positions.py), in (change_xid, key) order,
and only below the horizon `LEAST(pg_snapshot_xmin(pg_current_snapshot()), bound)`: the
oldest transaction still running, never past the round's durable bound
(positions.durable_bound). Why that horizon never skips a row committed out of order:
docs/sync.md, "Change positions and the download checkpoint".

The horizon and the page come from one statement, hence one snapshot: the horizon is the
oldest transaction running in the very snapshot the rows are read from. It is selected apart
and the page joined to it (`LEFT JOIN LATERAL`), so an empty page still says how far the
table has been read.

On Citus the same statement runs on each worker against that worker's shards
(placed_feed.py), with its parameters written into the text (`placed_sql`), since each worker
stamps change positions with its own transaction ids. There a shard read from its beginning
is first *scanned* in key order (`scan=True`): every row, whatever its change position, and
the horizon of the first page's snapshot, from which the change feed then goes on. A shard
moved to another worker keeps the positions its rows had on the old one, which mean nothing
on the new one; a scan reads them all the same.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sync.postgres import translated
from sync.replication.positions import Position

if TYPE_CHECKING:
    from sync.postgres import Connection, Record

# A row of a page: asyncpg's record on plain PostgreSQL, decoded JSON on Citus; read by name.
FeedRow: TypeAlias = "Record | dict[str, Any]"


@dataclass(frozen=True)
class ChangeFeed:
    """The changes of one central table (see the module doc).

    `source` is the FROM clause; its table named `alias` holds `change_xid` and the `key`
    columns (name, SQL type), which order rows within one change_xid and are compared as a
    row against the position's last key. `columns` selects every key column as text under
    its own name, since a position keeps the last key read, and `tenant_id` for a table whose
    rows the round shares out among its tenants. `per_tenant` reads one tenant's rows only.
    `what` names the rows in error messages. `binary` names the bytea columns among
    `columns` (read back from JSON on Citus).
    """

    what: str
    source: str
    alias: str
    columns: str
    key: tuple[tuple[str, str], ...]
    per_tenant: bool = False
    binary: tuple[str, ...] = ()

    @functools.cached_property
    def sql(self) -> str:
        """The page query: $1 position xid, $2 bound, $3 limit, then the position's last key
        (NULLs: none at that xid), then the tenant of a per-tenant feed."""
        return self._page_sql(self.source, scan=False)

    def placed_sql(
        self,
        shards: dict[str, str],
        since: Position,
        limit: int,
        bound: int,
        tenant_id: str | None,
        *,
        scan: bool,
    ) -> str:
        """The page query for one shard placement: tables named as their shards in `shards`,
        parameters written in as literals; with `scan`, every row after the last key read,
        in key order (see the module doc)."""
        source = re.sub(r"\b[a-z_]+\b", lambda word: shards.get(word[0], word[0]), self.source)
        tenant = [] if tenant_id is None else [tenant_id]
        values = [str(since.xid), str(bound), limit, *since.key_bound(len(self.key)), *tenant]
        return re.sub(
            r"\$(\d+)",
            lambda m: _literal(values[int(m[1]) - 1]),
            self._page_sql(source, scan=scan),
        )

    def _page_sql(self, source: str, *, scan: bool) -> str:
        xid = f"{self.alias}.change_xid"
        key = ", ".join(f"{self.alias}.{name}" for name, _ in self.key)
        after = ", ".join(f"${4 + i}::{sql_type}" for i, (_, sql_type) in enumerate(self.key))
        tenant = f"{self.alias}.tenant_id = ${4 + len(self.key)} AND " if self.per_tenant else ""
        if scan:
            where = f"{tenant}($4::{self.key[0][1]} IS NULL OR ({key}) > ({after}))"
            order = key
        else:
            where = f"""{tenant}{xid} >= $1::text::xid8
          AND ({xid} > $1::text::xid8 OR $4::{self.key[0][1]} IS NULL OR ({key}) > ({after}))
          AND {xid} < horizon.xid"""
            order = f"{xid}, {key}"
        return f"""
    WITH horizon AS MATERIALIZED (
        SELECT LEAST(pg_snapshot_xmin(pg_current_snapshot()), $2::text::xid8) AS xid
    )
    SELECT horizon.xid::text AS horizon, page.*
    FROM horizon LEFT JOIN LATERAL (
        SELECT {self.columns}, {xid}::text AS position
        FROM {source}
        WHERE {where}
        ORDER BY {order}
        LIMIT $3
    ) page ON true"""  # noqa: S608 - built from the feeds' constant text, no input

    async def read(
        self,
        connection: Connection,
        since: Position,
        limit: int,
        bound: int,
        tenant_id: str | None = None,
    ) -> tuple[list[Record], Position]:
        """Up to `limit` rows changed after `since` and below the horizon (never past
        `bound`), and where to resume."""
        assert self.per_tenant == (tenant_id is not None), "a per-tenant feed needs its tenant"
        tenant = [] if tenant_id is None else [tenant_id]
        where = self.what if tenant_id is None else f"{self.what} of tenant {tenant_id}"
        with translated(f"downloading {where}"):
            records = await connection.fetch(
                self.sql,
                str(since.xid),
                str(bound),
                limit,
                *since.key_bound(len(self.key)),
                *tenant,
            )
        rows = [r for r in records if r["position"] is not None]
        return rows, self._resume(since, rows, limit, int(records[0]["horizon"]))

    def _resume(self, since: Position, rows: list[Record], limit: int, horizon: int) -> Position:
        """After the last row of a full page; at the horizon after a shorter one, since every
        row below it is read."""
        if len(rows) < limit:
            return since.at_horizon(horizon)
        last = rows[-1]
        return since.after_page(int(last["position"]), tuple(last[name] for name, _ in self.key))


def _literal(value: Any) -> str:
    """`value` as an SQL literal: NULL, an integer, or a string with its quotes doubled
    (standard_conforming_strings, on since PostgreSQL 9.1, keeps backslashes plain)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "\x00" in text:
        raise ValueError("a NUL character cannot be part of an SQL literal")
    return "'" + text.replace("'", "''") + "'"
