"""The lease job: keeps this node holding slices of its tenants' fleet-wide allowances.

Run by the sync worker every `quotas.lease_interval_seconds` when the node has a central
database. For every tenant with a `block` allowance it reads what the node's workers served
in the period (their served-counts files) and, where needed, makes a claim on the tenant's
shard (sync.leases.central), then writes what the node holds to `leases.sqlite`, which the
request path reads (edge_node.usage.leases):

- no lease for the current period (a new tenant, a new month, a new boot): claim a slice;
- the lease running low (unspent at most half a slice, or less than one request of the
  costliest operation needs) and spent from since the last claim: claim another slice,
  `quotas.lease_share` of what the fleet has left (at least one such request), or twice what
  was served since the last run if more (up to a quarter of what is left), so that a busy
  node does not run dry;
  when the fleet has nothing left to grant, ask again at most every second while other nodes
  hold units unspent, every `EXHAUSTED_RETRY_SECONDS` once the allowance is used up;
- the lease's deadline less than half a lease away: renew it (and report the spend);
- nothing spent from it for `quotas.lease_idle_seconds`: give back what it holds unspent but
  one request of the costliest operation. First the local lease is cut (the workers stop
  spending past it within milliseconds), then, once that is written and two lease intervals
  have passed, the central one: a request admitted before the cut is counted by then. The
  node is then idle for the central database until it spends or asks again.

A shard out of reach marks its tenants' leases cut off: each worker spends what it holds,
then applies the plan's partition policy; the next claim that succeeds reports everything
served meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_node import clock
from edge_node.admission.quotas import QuotaRules
from edge_node.config import CentralConfig, QuotasConfig
from edge_node.errors import SyncError, TransientSyncError
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.leases import (
    Lease,
    boot_id,
    boottime_ns,
    drop_leases,
    open_leases,
    read_leases,
    write_leases,
)
from edge_node.usage.quotas import Allowance, calendar_month, count_period, served_files
from edge_node.usage.served import SERVED_DIR
from sync.leases.central import claim
from sync.postgres import Connection, close_quietly, connect, redact_dsn
from sync.shards import shard_for

log = logging.getLogger(__name__)
EXHAUSTED_RETRY_SECONDS = 5.0
# When nothing is left to grant but other nodes hold units unspent (they may give them back).
HELD_ELSEWHERE_RETRY_SECONDS = 1.0
# After a failed run the next comes at most this much later (sync.jobs), not after the sync
# worker's usual backoff of up to 30 s: a node cut off reports what it served meanwhile, and
# gets leases again, within seconds of the link coming back.
RETRY_CEILING_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 10.0
_NS = 1_000_000_000


@dataclass
class _Watch:
    """What the job remembers of one tenant between runs (in memory only)."""

    spent: int = -1  # the node's spend at the last run
    changed_ns: int = 0  # when that spend last changed
    claimed_spent: int = -1  # the node's spend at the last claim that asked for units
    next_claim_ns: int = 0  # no claim asking for units before this (the fleet had none)
    cut_at_ns: int | None = None  # when the local lease was cut to the spend, to give back
    cutting: bool = False  # a local cut is in this run's writes, not yet in the file


@dataclass(frozen=True)
class _Run:
    """What one run read before it claims: the period, the allowances, the leases, the spend."""

    start_ms: int
    allowances: dict[str, Allowance]
    held: dict[str, Lease]
    spent: Counter[str]


@dataclass(frozen=True)
class _Turn:
    """One tenant in one run: where it is, what it may use, and what the node served."""

    shard: int
    tenant_id: str
    allowance: Allowance
    start_ms: int
    spent: int  # by every worker of the node in the period
    now: int  # CLOCK_BOOTTIME when the run reached the tenant, before any claim
    watch: _Watch
    lease: Lease | None  # as leases.sqlite held it when the run began


@dataclass
class LeaseJob:
    """The periodic job of the module's docstring (a sync.jobs.PeriodicJob)."""

    central: CentralConfig
    quotas: QuotasConfig
    registry: TenantRegistry
    data_dir: Path
    node_id: str
    name: str = "quota-leases"
    retry_ceiling_seconds: float = RETRY_CEILING_SECONDS
    # CLOCK_BOOTTIME, the clock of lease deadlines (edge_node.usage.leases); a test's own.
    clock_ns: Callable[[], int] = boottime_ns
    # Units of the costliest billable operation (`[meter.units]`): a lease is never left with
    # less than one request of it needs, or that request could never be served.
    max_units: int = 1
    _rules: QuotaRules = field(init=False)
    _leases: sqlite3.Connection = field(init=False)
    _connections: dict[int, Connection] = field(default_factory=dict, init=False)
    _watch: dict[str, _Watch] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._rules = QuotaRules(self.quotas)
        self._leases = open_leases(self.data_dir)

    @property
    def interval(self) -> float:
        return self.quotas.lease_interval_seconds

    async def close(self) -> None:
        for connection in self._connections.values():
            await close_quietly(connection)
        self._connections.clear()
        self._leases.close()

    async def run(self) -> None:
        """One pass over every tenant with a `block` allowance, as the module says."""
        start_ms, end_ms = calendar_month(clock.now_ms())
        allowances = self._allowances()
        held = read_leases(self._leases)
        gone = [tenant_id for tenant_id in held if tenant_id not in allowances]
        if gone:
            drop_leases(self._leases, gone)
        spent = count_period(served_files(self.data_dir / SERVED_DIR), start_ms, end_ms)
        by_shard: dict[int, list[str]] = {}
        for tenant_id in allowances:
            by_shard.setdefault(shard_for(tenant_id, len(self.central.dsns)), []).append(tenant_id)
        # The shards one after another would let one slow or unreachable server hold up the
        # renewals of every other shard's tenants for as long as its timeouts.
        outcomes = await asyncio.gather(
            *(
                self._shard(shard, tenant_ids, _Run(start_ms, allowances, held, spent))
                for shard, tenant_ids in by_shard.items()
            ),
            return_exceptions=True,  # no shard's work left running when another's fails
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        failures = [failure for failure in outcomes if failure]
        if failures:
            raise TransientSyncError("; ".join(str(failure) for failure in failures))

    async def _shard(self, shard: int, tenant_ids: list[str], run: _Run) -> str:
        """Keep the leases of one shard's tenants; what failed ("" when nothing did)."""
        allowances, held, start_ms = run.allowances, run.held, run.start_ms
        written = []
        failure = ""
        try:
            for tenant_id in tenant_ids:
                watch = self._watch.setdefault(tenant_id, _Watch())
                turn = _Turn(
                    shard, tenant_id, allowances[tenant_id], start_ms,
                    run.spent.get(tenant_id, 0), self.clock_ns(), watch, held.get(tenant_id),
                )  # fmt: skip
                lease = await self._keep(turn)
                if lease is not None:
                    written.append(lease)
        except SyncError as exc:
            failure = f"shard {shard}: {exc}"
            await self._disconnect(shard)
            written.extend(self._cut_off(tenant_ids, held, allowances, start_ms, written))
        wrote = False
        try:
            if written:
                write_leases(self._leases, written)
            wrote = True
        finally:
            # A give-back starts only once its local cut is in the file.
            for lease in written:
                cutting = self._watch.get(lease.tenant_id)
                if cutting is not None and cutting.cutting:
                    cutting.cut_at_ns = self.clock_ns() if wrote else None
                    cutting.cutting = False
        return failure

    def _allowances(self) -> dict[str, Allowance]:
        """The `block` allowances of the node's tenants (a fleet-wide allowance each)."""
        found = {}
        for tenant in self.registry.list_tenants():
            allowance = self._rules.allowance(tenant.plan, tenant.quota, tenant.quota_policy)
            if allowance is not None and allowance.block:
                found[tenant.tenant_id] = allowance
        return found

    async def _keep(self, turn: _Turn) -> Lease | None:
        """The tenant's lease after whatever claim it needs now (None: nothing to write)."""
        watch, lease = turn.watch, turn.lease
        # Units served since the last run: a lease is claimed for twice that at least, and
        # renewed before it holds less, so the workers do not run dry between runs.
        demand = max(0, turn.spent - watch.spent) if watch.spent >= 0 else 0
        if turn.spent != watch.spent:
            watch.spent, watch.changed_ns = turn.spent, turn.now
        if lease is None or lease.period_start_ms != turn.start_ms or lease.boot_id != boot_id():
            watch.cut_at_ns = None  # a give-back of another period, or another boot, is moot
            return await self._claim(turn, self._share(turn.allowance.units))
        left = max(0, turn.allowance.units - lease.fleet_spent)
        share = max(self._share(left), min(2 * demand, left // 4))
        unspent = lease.granted - turn.spent
        if watch.cut_at_ns is not None:
            return await self._give_back(turn, watch.cut_at_ns)
        # Low: half a share or less, or not enough for one request of the costliest operation.
        low = unspent * 2 <= share or unspent < self.max_units
        wanting = turn.spent != watch.claimed_spent or unspent < self.max_units
        if low and wanting and turn.now >= watch.next_claim_ns:
            return await self._claim(turn, share)
        idle = turn.now - watch.changed_ns >= self.quotas.lease_idle_seconds * _NS
        kept = self.max_units
        if unspent > kept and idle and not lease.cut_off:  # cut off, it could not be given back
            watch.cutting = True  # first locally: see the module's docstring
            return lease._replace(granted=min(lease.granted, turn.spent + kept))
        lease_ns = int(self.quotas.lease_seconds * _NS)
        if lease.cut_off or lease.valid_until_ns - turn.now < lease_ns // 2:
            return await self._claim(turn, 0)
        return None

    async def _give_back(self, turn: _Turn, cut_at_ns: int) -> Lease | None:
        """Give back to the fleet the lease cut locally at `cut_at_ns` (all but what one
        request of the costliest operation needs), once the workers have had two lease
        intervals to see the cut; None: not yet."""
        if turn.now - cut_at_ns < 2 * self.interval * _NS:
            return None
        turn.watch.cut_at_ns = None
        if turn.lease is None or turn.lease.granted > turn.spent + self.max_units:
            return None  # the local cut is not in the file (another run's write replaced it)
        return await self._claim(turn, 0, keep=self.max_units)

    def _share(self, left: int) -> int:
        """Units one claim asks for when the fleet has `left`: at least one request of the
        costliest operation."""
        return max(self.max_units, math.ceil(left * self.quotas.lease_share))

    async def _claim(self, turn: _Turn, wanted: int, *, keep: int | None = None) -> Lease:
        """Claim `wanted` units (or give back all but `keep`) for the turn's tenant."""
        connection = await self._connection(turn.shard)
        answer = await claim(
            connection,
            tenant_id=turn.tenant_id,
            period_start=turn.start_ms,
            node_id=self.node_id,
            allowance=turn.allowance.units,
            spent=turn.spent,
            wanted=wanted,
            lease_seconds=self.quotas.lease_seconds,
            keep=keep,
        )
        turn.watch.claimed_spent = turn.spent
        if keep is None:
            turn.watch.cut_at_ns = None
        # The spend on record is more than the node counts (its data directory was lost or
        # restored): what it served before, and no longer counts, must not be served again.
        missing = max(0, answer.node_spent - turn.spent)
        if missing:
            log.warning(
                "tenant %s: the central database records %d units served by this node that its"
                " served counts no longer hold; its lease is cut by as much",
                turn.tenant_id,
                missing,
            )
        if wanted and answer.granted - missing <= turn.spent:  # nothing came: ask again later
            wait = EXHAUSTED_RETRY_SECONDS if answer.exhausted else HELD_ELSEWHERE_RETRY_SECONDS
            turn.watch.next_claim_ns = turn.now + int(wait * _NS)
        if answer.reclaimed:
            log.info(
                "took back %d units of tenant %s's allowance from lapsed leases of other nodes",
                answer.reclaimed,
                turn.tenant_id,
            )
        return Lease(
            turn.tenant_id,
            turn.start_ms,
            turn.allowance.units,
            answer.granted - missing,
            turn.spent,
            answer.fleet_spent - missing,
            answer.exhausted,
            turn.now + int(self.quotas.lease_seconds * _NS),  # `now` was read before the claim
            boot_id(),
            False,
            turn.allowance.partition_units,
            _partition_used(turn),
        )

    def _cut_off(
        self,
        tenant_ids: Sequence[str],
        held: dict[str, Lease],
        allowances: dict[str, Allowance],
        start_ms: int,
        written: Sequence[Lease],
    ) -> list[Lease]:
        """Leases marking the shard's tenants cut off (those not renewed before the failure):
        each keeps what it holds; a tenant with no lease this period holds nothing."""
        done = {lease.tenant_id for lease in written}
        marked = []
        for tenant_id in tenant_ids:
            if tenant_id in done:
                continue
            lease = held.get(tenant_id)
            partition = allowances[tenant_id].partition_units
            if lease is None or lease.period_start_ms != start_ms:
                lease = Lease(
                    tenant_id,
                    start_ms,
                    allowances[tenant_id].units,
                    0,
                    0,
                    0,
                    False,
                    0,
                    boot_id(),
                    True,
                    partition,
                )
            marked.append(lease._replace(cut_off=True, partition_units=partition))
        return marked

    async def _connection(self, shard: int) -> Connection:
        connection = self._connections.get(shard)
        if connection is None or connection.is_closed():
            connection = await connect(
                self.central.dsns[shard],
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=STATEMENT_TIMEOUT_SECONDS,
            )
            self._connections[shard] = connection
        return connection

    async def _disconnect(self, shard: int) -> None:
        connection = self._connections.pop(shard, None)
        if connection is not None:
            await close_quietly(connection)
            log.debug("lease connection to %s closed", redact_dsn(self.central.dsns[shard]))


def _partition_used(turn: _Turn) -> int:
    """What the node has served past its grants in the period: the partition units used at
    earlier cuts (as its lease says), and what it served past the lease's grant since (a
    claim then sets the grant to at least the spend it reports, so nothing counts twice)."""
    lease = turn.lease
    if lease is None or lease.period_start_ms != turn.start_ms:
        return 0
    return lease.partition_used + max(0, turn.spent - lease.granted)
