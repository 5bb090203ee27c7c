"""Allowance thresholds: a tenant's spend reaching 80% and 100% of its allowance, each recorded
once per billing period.

Admission looks after every allowance it applies (edge_node.admission.quotas): the first
request that finds the period's spend at or past a threshold records it in node.sqlite's
`quota_thresholds` (this module's table, component `quotas`), once per tenant, period and
threshold whichever worker sees it first (`INSERT OR IGNORE`), and counts it in
`edge_node_quota_thresholds_crossed_total`. After that, a threshold already recorded costs a
request one set lookup. A row that cannot be written (a full disk) is logged and tried again
by the next request; the request itself is never refused for it.
"""

from __future__ import annotations

import logging
import sqlite3

from edge_node import sqlite

log = logging.getLogger(__name__)

COMPONENT = "quotas"
THRESHOLDS = (80, 100)  # percent of the allowance
MIGRATIONS = (
    """
    CREATE TABLE quota_thresholds (
        tenant_id TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        threshold INTEGER NOT NULL CHECK (threshold IN (80, 100)),
        crossed_at INTEGER NOT NULL,
        spent INTEGER NOT NULL,
        allowance INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, period_start, threshold)
    ) WITHOUT ROWID;
    """,
)


class ThresholdLog:
    """The thresholds crossed, in node.sqlite, and how many this process recorded."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)
        self._conn = conn
        self._recorded: set[tuple[str, int, int]] = set()
        self.crossed = dict.fromkeys(THRESHOLDS, 0)

    def check(
        self, tenant_id: str, period_start: int, spent: int, allowance: int, now_ms: int
    ) -> None:
        """Record each threshold `spent` has reached this period, if not recorded yet."""
        for threshold in THRESHOLDS:
            if spent * 100 < allowance * threshold:
                return
            key = (tenant_id, period_start, threshold)
            if key not in self._recorded:
                self._record(key, spent, allowance, now_ms)

    def crossed_in(self, tenant_id: str, period_start: int) -> list[dict[str, int]]:
        """The thresholds the tenant crossed in the period starting at `period_start` (ms)."""
        rows = self._conn.execute(
            "SELECT threshold, crossed_at, spent, allowance FROM quota_thresholds"
            " WHERE tenant_id = ? AND period_start = ? ORDER BY threshold",
            (tenant_id, period_start),
        ).fetchall()
        names = ("threshold", "crossed_at_ms", "spent", "allowance")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _record(self, key: tuple[str, int, int], spent: int, allowance: int, now_ms: int) -> None:
        tenant_id, period_start, threshold = key
        try:
            with sqlite.transaction(self._conn):
                inserted = self._conn.execute(
                    "INSERT OR IGNORE INTO quota_thresholds (tenant_id, period_start, threshold,"
                    " crossed_at, spent, allowance) VALUES (?, ?, ?, ?, ?, ?)",
                    (tenant_id, period_start, threshold, now_ms, spent, allowance),
                ).rowcount
        except sqlite3.Error as exc:
            log.error(
                "quota threshold %s%% of tenant %s not recorded: %s", threshold, tenant_id, exc
            )
            return
        self._recorded.add(key)
        if inserted:
            self.crossed[threshold] += 1
            log.info(
                "tenant %s reached %s%% of its allowance (%s of %s units)",
                tenant_id,
                threshold,
                spent,
                allowance,
            )
