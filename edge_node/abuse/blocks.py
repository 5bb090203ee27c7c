"""Client IPs blocked for abuse: the ip_blocks table of node.sqlite, and the daemon's view of it.

The daemon writes a block when a spike trips the blocking policy (edge_node.abuse.guard);
operators list and lift blocks with `edge-node blocks list` / `blocks lift IP` while it runs.
Both go through node.sqlite, so every worker process and the CLI agree. The daemon keeps
the active blocks in a dict (the request path does one lookup) and re-reads the table only
when `PRAGMA data_version` says another connection committed to node.sqlite, checking that
at most once per `check_interval` seconds: a lift reaches every worker within that time.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.clock import format_us, now_us
from edge_node.errors import RegistryError

COMPONENT = "abuse"
MIGRATIONS = (
    # Written by the daemon when a spike blocks an IP, listed and lifted by `edge-node
    # blocks`; a row past expires_at is inert.
    """
    CREATE TABLE ip_blocks (
        ip TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        blocked_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rate_per_second REAL NOT NULL,
        baseline_per_second REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)


@dataclass(frozen=True, slots=True)
class IpBlock:
    """One blocked client IP: why, since and until when (microseconds), and the rates seen."""

    ip: str
    reason: str
    blocked_at: int
    expires_at: int
    rate_per_second: float
    baseline_per_second: float

    def to_json(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "reason": self.reason,
            "blocked_at": format_us(self.blocked_at),
            "expires_at": format_us(self.expires_at),
            "rate_per_second": round(self.rate_per_second, 3),
            "baseline_per_second": round(self.baseline_per_second, 3),
        }


def canonical_ip(text: str) -> str:
    """`text` as the address spelling blocks are stored under; RegistryError if not an IP."""
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        raise RegistryError(f"{text!r} is not an IPv4 or IPv6 address") from None


_COLUMNS = "ip, reason, blocked_at, expires_at, rate_per_second, baseline_per_second"


class BlockStore:
    """The ip_blocks table: the `abuse` component of node.sqlite (edge_node.node_database)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """The blocks on an open node.sqlite, their table migrated."""
        sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)
        self._conn = conn

    def block(self, block: IpBlock) -> None:
        """Record `block`, replacing any earlier block of the same IP."""
        with sqlite.transaction(self._conn):
            self._conn.execute(
                f"INSERT OR REPLACE INTO ip_blocks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    block.ip,
                    block.reason,
                    block.blocked_at,
                    block.expires_at,
                    block.rate_per_second,
                    block.baseline_per_second,
                ),
            )
            self._conn.execute("DELETE FROM ip_blocks WHERE expires_at <= ?", (block.blocked_at,))

    def active(self, now: int | None = None) -> list[IpBlock]:
        """Blocks not yet expired, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ip_blocks WHERE expires_at > ?"  # noqa: S608
            " ORDER BY blocked_at, ip",
            (now_us() if now is None else now,),
        ).fetchall()
        return [IpBlock(*row) for row in rows]

    def lift(self, ip: str) -> IpBlock | None:
        """Remove the block of `ip`; the block lifted, None if it was not blocked."""
        now = now_us()
        with sqlite.transaction(self._conn):
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM ip_blocks WHERE ip = ? AND expires_at > ?",  # noqa: S608
                (ip, now),
            ).fetchone()
            self._conn.execute("DELETE FROM ip_blocks WHERE ip = ?", (ip,))
        return None if row is None else IpBlock(*row)

    def data_version(self) -> int:
        """Changes whenever another connection commits to node.sqlite."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])


class BlockList:
    """The daemon's view of the active blocks: one dict lookup per request."""

    def __init__(
        self,
        store: BlockStore,
        *,
        check_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._check_interval = check_interval
        self._clock = clock
        self._blocks: dict[str, IpBlock] = {}
        self._version = store.data_version()
        self._next_check = clock() + check_interval
        self._reload()

    def blocked(self, ip: str, now: float | None = None) -> IpBlock | None:
        """The active block of `ip`, if any; `now` is the clock's reading, if already read."""
        if (self._clock() if now is None else now) >= self._next_check:
            self._refresh()
        if not self._blocks:
            return None
        block = self._blocks.get(ip)
        if block is None:
            return None
        if block.expires_at <= now_us():
            del self._blocks[ip]
            return None
        return block

    def add(self, block: IpBlock) -> None:
        """Block an IP here and, through node.sqlite, on every worker."""
        self._store.block(block)
        self._blocks[block.ip] = block

    def __len__(self) -> int:
        return len(self._blocks)

    def _refresh(self) -> None:
        self._next_check = self._clock() + self._check_interval
        version = self._store.data_version()
        if version != self._version:
            self._version = version
            self._reload()

    def _reload(self) -> None:
        self._blocks = {block.ip: block for block in self._store.active()}
