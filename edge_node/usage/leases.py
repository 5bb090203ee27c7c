"""Allowance leases: the slices of a tenant's fleet-wide `block` allowance this node holds.

With a central database, a `block` allowance is the fleet's, not each node's. The sync
worker (sync.leases) claims slices of it from PostgreSQL (a lease: units this node may serve
in the period, until a deadline unless renewed) and writes what it holds here, in
`data_dir/leases.sqlite`, one row per tenant; the request path reads the rows from memory
(`LeaseBook`) and admits a billable request only while this node's spend in the period stays
within its lease. No request waits on the network: a lease is claimed ahead of need.

Once a lease is spent and no other can be had, the answer depends on why
(`LeaseBook.limit`): the fleet has used the allowance up (429 `quota-exhausted`); the node
is cut off from the central database, or its lease ran out of time, and the plan's partition
policy applies (`refuse`: 503 `quota-unavailable`; `local`: up to `partition_allowance` more
units); or a renewal is on its way (503 `quota-unavailable`, Retry-After 1).

A lease's deadline is kept on CLOCK_BOOTTIME, which every process of the machine reads alike
and no one can set: a stepped wall clock neither stretches nor cuts it. A lease written in an
earlier boot is over. The central database takes back what a node did not report spent only
past the lease's deadline by its own clock plus a grace (sync.leases.central), so what the
fleet can serve past an allowance is at most what the nodes held unreported when they were cut
off, plus the partition allowances in use: `overshoot_bound`, exported by every node
(docs/quotas.md, "Several nodes").
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from edge_node import sqlite

FILE_NAME = "leases.sqlite"
MIGRATIONS = (
    """
    CREATE TABLE leases (
        tenant_id TEXT PRIMARY KEY,
        period_start_ms INTEGER NOT NULL,
        allowance INTEGER NOT NULL,
        granted INTEGER NOT NULL,
        node_spent INTEGER NOT NULL,
        fleet_spent INTEGER NOT NULL,
        exhausted INTEGER NOT NULL,
        valid_until_ns INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        cut_off INTEGER NOT NULL,
        partition_units INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # What the node served past its grants in the period: the partition allowance is the
    # period's, not each cut's.
    "ALTER TABLE leases ADD COLUMN partition_used INTEGER NOT NULL DEFAULT 0;",
)
RENEWING_RETRY_AFTER = 1  # s: a lease being renewed arrives within a lease interval or two
CUT_OFF_RETRY_AFTER = 5  # s: the lease job tries the central database again every 2 s at most


class Lease(NamedTuple):
    """What this node holds of a tenant's allowance for one period, as the sync worker last
    wrote it. `granted` counts every unit the node was given in the period (its own spend
    included); `node_spent` and `fleet_spent` are the spends reported at the last contact."""

    tenant_id: str
    period_start_ms: int
    allowance: int
    granted: int
    node_spent: int
    fleet_spent: int
    exhausted: bool  # the central database had nothing more to give at the last contact
    valid_until_ns: int  # CLOCK_BOOTTIME: the node spends nothing more of `granted` then
    boot_id: str
    cut_off: bool  # the last attempt to reach the central database failed
    partition_units: int  # what the node may serve past its grants once cut off (`local`)
    partition_used: int = 0  # of those, what it has served past them in the period already


class LeaseLimit(NamedTuple):
    """What a lease allows a request now: this node's spend limit in the period, the other
    nodes' reported spend, and why it allows no more once reached."""

    units: int
    others_spent: int
    # Once `units` are spent: "exhausted" (429), "unavailable" (503, a renewal is on its way)
    # or "cut-off" (503, the central database out of reach: a longer Retry-After).
    refusal: str


def boottime_ns() -> int:
    """CLOCK_BOOTTIME in nanoseconds: the same in every process, never set, never stepped."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@functools.cache
def boot_id() -> str:
    """This boot's id (a lease deadline is CLOCK_BOOTTIME, which restarts at each boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def open_leases(data_dir: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection to data_dir/leases.sqlite, its table made if missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite.connect(data_dir / FILE_NAME, synchronous="full", busy_timeout_ms=busy_timeout_ms)
    try:
        sqlite.migrate(conn, MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    return conn


def read_leases(conn: sqlite3.Connection) -> dict[str, Lease]:
    """Every tenant's lease in the file."""
    rows = conn.execute(
        "SELECT tenant_id, period_start_ms, allowance, granted, node_spent, fleet_spent,"
        " exhausted, valid_until_ns, boot_id, cut_off, partition_units, partition_used"
        " FROM leases"
    ).fetchall()
    return {
        row[0]: Lease(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            bool(row[6]),
            row[7],
            row[8],
            bool(row[9]),
            row[10],
            row[11],
        )
        for row in rows
    }


def write_leases(conn: sqlite3.Connection, leases: Iterable[Lease]) -> None:
    """Replace the rows of `leases`' tenants, in one transaction."""
    with sqlite.transaction(conn):
        conn.executemany(
            "INSERT OR REPLACE INTO leases (tenant_id, period_start_ms, allowance, granted,"
            " node_spent, fleet_spent, exhausted, valid_until_ns, boot_id, cut_off,"
            " partition_units, partition_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    lease.tenant_id,
                    lease.period_start_ms,
                    lease.allowance,
                    lease.granted,
                    lease.node_spent,
                    lease.fleet_spent,
                    int(lease.exhausted),
                    lease.valid_until_ns,
                    lease.boot_id,
                    int(lease.cut_off),
                    lease.partition_units,
                    lease.partition_used,
                )
                for lease in leases
            ],
        )


def drop_leases(conn: sqlite3.Connection, tenant_ids: Iterable[str]) -> None:
    """Forget the leases of tenants that no longer have a `block` allowance."""
    with sqlite.transaction(conn):
        conn.executemany("DELETE FROM leases WHERE tenant_id = ?", [(t,) for t in tenant_ids])


def is_live(lease: Lease, now_ns: int) -> bool:
    """Whether the node may still spend from `lease`: before its deadline, in this boot."""
    return now_ns < lease.valid_until_ns and lease.boot_id == boot_id()


def limit(lease: Lease | None, period_start_ms: int, now_ns: int) -> LeaseLimit:
    """What `lease` lets this node serve of its period starting at `period_start_ms`.

    A live lease (before its deadline, from this boot) allows its `granted` units; once cut
    off from the central database, `local` partition units more (those of the period not
    used at an earlier cut). Past its deadline the central database may give what the node
    did not report spent to other nodes: under `refuse` the node spends nothing more; under
    `local` it goes on as when cut off (what it spends of a grant taken back is in the
    overshoot bound, as units held unreported). No lease for the period yet: nothing, until
    the sync worker claims.
    """
    if lease is None or lease.period_start_ms != period_start_ms:
        return LeaseLimit(0, 0, "unavailable")
    others = max(0, lease.fleet_spent - lease.node_spent)
    live = is_live(lease, now_ns)
    if not live:  # `refuse` (no partition units): nothing more; `local`: as when cut off
        units = lease.granted + partition_left(lease) if lease.partition_units else 0
        return LeaseLimit(units, others, "cut-off")
    if lease.cut_off:
        return LeaseLimit(lease.granted + partition_left(lease), others, "cut-off")
    return LeaseLimit(lease.granted, others, "exhausted" if lease.exhausted else "unavailable")


def partition_left(lease: Lease) -> int:
    """The partition units the node may still serve past its grants in the lease's period."""
    return max(0, lease.partition_units - lease.partition_used)


def lease_state(lease: Lease | None, period_start_ms: int, now_ns: int) -> str:
    """`none` (no lease for the period), `lapsed` (past its deadline, or from another boot),
    `cut_off` (the central database out of reach) or `live`."""
    if lease is None or lease.period_start_ms != period_start_ms:
        return "none"
    if not is_live(lease, now_ns):
        return "lapsed"
    return "cut_off" if lease.cut_off else "live"


def overshoot_bound(leases: Iterable[Lease], period_start_ms: int) -> int:
    """What this node could serve in the period beyond what the central database knows it
    spent: each lease's units granted and not reported spent, plus the partition units left
    to tenants under the `local` policy. Summed over the fleet's nodes, it bounds how far past an
    allowance the fleet can serve."""
    return sum(
        max(0, lease.granted - lease.node_spent) + partition_left(lease)
        for lease in leases
        if lease.period_start_ms == period_start_ms
    )


class LeaseBook:
    """The leases file as the request path reads it: from memory, read again when another
    process has written it (its `data_version`), checked at most every `refresh_seconds`."""

    def __init__(self, data_dir: Path, *, refresh_seconds: float = 0.01) -> None:
        self._conn = open_leases(data_dir)
        self._refresh_ns = int(refresh_seconds * 1e9)
        self._next_check_ns = 0
        self._version = -1
        self._leases: dict[str, Lease] = {}
        # tenant -> (the live lease's deadline, the period asked for, what it allows)
        self._live: dict[str, tuple[int, int, LeaseLimit]] = {}

    def close(self) -> None:
        self._conn.close()

    def limit(self, tenant_id: str, period_start_ms: int, now_ns: int) -> LeaseLimit:
        """`limit()` of `tenant_id`'s lease: what it allows now. A live lease's answer does
        not change until its deadline or the file does, so it is worked out once for both."""
        known = self._live.get(tenant_id)
        if (
            known is not None
            and now_ns < self._next_check_ns
            and now_ns < known[0]
            and known[1] == period_start_ms
        ):
            return known[2]
        lease = self.lease(tenant_id, now_ns)
        allowed = limit(lease, period_start_ms, now_ns)
        if lease is not None and is_live(lease, now_ns):
            self._live[tenant_id] = (lease.valid_until_ns, period_start_ms, allowed)
        return allowed

    def lease(self, tenant_id: str, now_ns: int) -> Lease | None:
        """`tenant_id`'s lease, as last written (checked for changes if due)."""
        if now_ns >= self._next_check_ns:
            self._refresh(now_ns)
        return self._leases.get(tenant_id)

    def all(self) -> list[Lease]:
        """Every lease as last written (for metrics)."""
        self._refresh(boottime_ns())
        return list(self._leases.values())

    def _refresh(self, now_ns: int) -> None:
        """Read the file again if another process has written it since the last read."""
        self._next_check_ns = now_ns + self._refresh_ns
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._leases = read_leases(self._conn)
            self._live = {}
            self._version = version
