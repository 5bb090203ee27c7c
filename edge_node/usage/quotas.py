"""Usage allowances: the units a tenant has spent in its billing period, counted in memory.

A tenant may have an allowance per billing period (its plan's, `[quotas]`, or its own,
`tenants update --quota`); admission (edge_node.admission.router) asks `PeriodSpend.take`
before a billable request runs and gives back what it took once the request is over.

The period is the calendar month in UTC (`calendar_month`), for every tenant, with or
without a Stripe subscription: spend is read from counts kept per UTC day, which a Stripe
period (starting at any second) would cut through; a period begins at 00:00 UTC on the 1st
(docs/quotas.md).

Spend is not written anywhere of its own: it is what the meter already counts. Every usage
event recorded is counted per tenant and UTC day in the served-counts file of its worker
(edge_node.usage.served), and the meter tells `PeriodSpend.add` of each count as it makes
it, so this process's own spend is a sum kept in memory, exact and never written per
request. Other worker processes of the node (`serve --workers N`) count in files of their
own, read here at most every `OTHERS_REFRESH_SECONDS`. On top of spend, each request
admitted holds its units (`take`) until it is over (`release`), so requests in flight in
this process cannot together pass a `block` allowance; a request counted served and not yet
released is counted twice for that moment, never zero times.

Because spend is what was served, changing an allowance while requests are in flight only
changes what spend is compared with: nothing already served is given back or counted again.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from edge_node import clock
from edge_node.usage.leases import LeaseBook, boottime_ns
from edge_node.usage.served import DAY_MS, read_counts

# How stale the other workers' counts may be when a request is admitted: their usage within
# this interval is what several workers of one node can serve past a `block` allowance.
OTHERS_REFRESH_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Allowance:
    """Units a tenant may use per period, and whether it is refused (`block`) past them."""

    units: int
    block: bool
    # With a central database: the units a node cut off from it may serve past its lease
    # (the plan's `partition_allowance` under `partition_policy = "local"`; 0: `refuse`).
    partition_units: int = 0


class QuotaDecision(NamedTuple):
    """The allowance's answer to one request (a NamedTuple: one is made per request)."""

    allowed: bool
    limit: int
    remaining: int  # units left in the period once this request is served
    reset_seconds: int  # until the period ends and spend starts again from zero
    window_seconds: int  # the period's length
    # Why a refused request was refused: "exhausted" (the allowance is used up) or
    # "unavailable" or "cut-off" (this node's lease of a fleet-wide allowance is spent and no
    # other came: a renewal is on its way, or the central database is out of reach).
    refusal: str = "exhausted"


_decision = tuple.__new__


def calendar_month(now_ms: int) -> tuple[int, int]:
    """The calendar month in UTC containing `now_ms`: its start and end, in milliseconds."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


class PeriodSpend:
    """Each tenant's units spent in the current period on this node, as the module says.

    `own` is this process's served-counts file (None: nothing served before this process
    counts); the other `*.counts` files beside it are the other workers'.
    """

    def __init__(
        self,
        own: Path | None,
        *,
        clock_ms: Callable[[], int] = clock.now_ms,
        refresh_seconds: float = OTHERS_REFRESH_SECONDS,
    ) -> None:
        self._own_path = own
        self._clock_ms = clock_ms
        self._refresh_seconds = refresh_seconds
        self._own: Counter[str] = Counter()
        self._others: Counter[str] = Counter()
        self._held: dict[str, int] = {}
        self._next_refresh_ms = 0
        self.start_ms, self.end_ms = 0, 0
        self._window = 0  # the period's length in seconds
        self._roll(clock_ms())

    def take(
        self,
        tenant_id: str,
        allowance: Allowance,
        units: int,
        leases: LeaseBook | None = None,
    ) -> QuotaDecision:
        """Hold `units` for a request of `tenant_id` unless a `block` allowance has not that
        many left (refused: nothing held). What is held is given back by `release`.

        With `leases` (a fleet-wide allowance, edge_node.usage.leases) this node's spend is
        held to what its lease of the current period allows instead, and what is left counts
        the other nodes' spend."""
        now_ms = self._clock_ms()
        if now_ms >= self._next_refresh_ms:  # never later than the period's end
            self._catch_up(now_ms)
        holding = self._held
        held = holding.get(tenant_id, 0)
        here = self._own.get(tenant_id, 0) + self._others.get(tenant_id, 0) + held
        if leases is None:
            refusal = "exhausted"
            left = allowance.units - here
            allowed = left >= units or not allowance.block
        else:
            lease = leases.limit(tenant_id, self.start_ms, boottime_ns())
            refusal = lease.refusal
            left = allowance.units - lease.others_spent - here
            allowed = here + units <= lease.units
        if allowed:
            holding[tenant_id] = held + units
            left -= units
        # One made per request: built as a plain tuple, without the named tuple's __new__.
        return _decision(
            QuotaDecision,
            (
                allowed,
                allowance.units,
                left if left > 0 else 0,
                (self.end_ms - now_ms + 999) // 1000 or 1,  # whole seconds, at least 1
                self._window,
                refusal,
            ),
        )

    def release(self, tenant_id: str, units: int) -> None:
        """Give back what `take` held, once the request is over (counted served or not)."""
        held = self._held.get(tenant_id, 0) - units
        if held > 0:
            self._held[tenant_id] = held
        else:
            self._held.pop(tenant_id, None)

    def add(self, tenant_id: str, timestamp_ms: int, units: int) -> None:
        """Count `units` served at `timestamp_ms` (the meter calls this as it counts them)."""
        if timestamp_ms >= self.end_ms:
            self._roll(timestamp_ms)
        if timestamp_ms >= self.start_ms:
            self._own[tenant_id] = self._own.get(tenant_id, 0) + units

    def spent(self, tenant_id: str) -> int:
        """Units served to `tenant_id` in the current period by every worker of the node."""
        return self._own.get(tenant_id, 0) + self._others.get(tenant_id, 0)

    def spent_now(self, tenant_id: str) -> int:
        """`spent`, the period and the other workers' counts brought up to date first."""
        now_ms = self._clock_ms()
        if now_ms >= self._next_refresh_ms:
            self._catch_up(now_ms)
        return self.spent(tenant_id)

    def _catch_up(self, now_ms: int) -> None:
        """Start the next period if this one is over, else read the other workers' counts."""
        if now_ms >= self.end_ms:
            self._roll(now_ms)
        else:
            self._refresh_others(now_ms)

    def _roll(self, now_ms: int) -> None:
        """Start counting the period containing `now_ms` from the counts files."""
        self.start_ms, self.end_ms = calendar_month(now_ms)
        self._window = (self.end_ms - self.start_ms) // 1000
        self._own = Counter() if self._own_path is None else self._count([self._own_path])
        self._refresh_others(now_ms)

    def _refresh_others(self, now_ms: int) -> None:
        # The node's clock (edge_node.clock) never steps back, so it can pace this too.
        self._next_refresh_ms = min(now_ms + int(self._refresh_seconds * 1000), self.end_ms)
        if self._own_path is None:
            return
        own = self._own_path
        self._others = self._count([path for path in served_files(own.parent) if path != own])

    def _count(self, paths: list[Path]) -> Counter[str]:
        return count_period(paths, self.start_ms, self.end_ms)


def count_period(paths: list[Path], start_ms: int, end_ms: int) -> Counter[str]:
    """Units per tenant served in the days from `start_ms` to `end_ms`, summed over the
    counts files at `paths` (a file being made, or not a counts file, counts nothing)."""
    first, last = start_ms // DAY_MS, end_ms // DAY_MS
    units: Counter[str] = Counter()
    for path in paths:
        try:
            counts = read_counts(path)
        except (FileNotFoundError, ValueError):
            continue
        for tenant_id, day, _, served in counts:
            if first <= day < last:
                units[tenant_id] += served
    return units


def served_files(served_dir: Path) -> list[Path]:
    """Every worker's counts file in `served_dir` (data_dir/served)."""
    try:
        return [Path(e.path) for e in os.scandir(served_dir) if e.name.endswith(".counts")]
    except FileNotFoundError:
        return []
