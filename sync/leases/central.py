"""Claiming, renewing and giving back slices of a tenant's fleet-wide allowance in PostgreSQL.

The books are central migration 0008's `quota_periods` and `quota_leases`. One `claim` is one
transaction on the tenant's shard (on Citus every statement names the tenant, so it runs on
the worker holding it), made one at a time per tenant and period by the lock on its
`quota_periods` row:

1. the period's row is made or its allowance updated to the claimer's (and locked);
2. what other nodes hold past their lease's deadline plus `RECLAIM_GRACE_SECONDS` and did
   not report spent is taken back (their `granted` set to what they reported spent): such a
   node has stopped spending from that lease by its own clock (edge_node.usage.leases);
3. the claimer's row records the spend it reports (never lowered) and a new deadline, and
   with `give_back` its unspent units return to the fleet (`granted` = spent + `keep`);
4. it is granted at most `wanted` of what the fleet has not committed: the allowance minus
   the sum over nodes of the greater of granted and spent. The allowance is reported used
   up (`exhausted`) only when nothing is left to grant and no other node holds units it has
   not reported spent: until then a node out of units answers "try again" (503), not "used
   up for the period" (429), since those units may come back or be reclaimed.

So the sum of grants never passes the allowance, and a node spends only what it holds: the
fleet serves past the allowance only what a node cut off spent of a lease that was then taken
back, and the partition allowances (docs/quotas.md, "Several nodes").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from edge_node.errors import TransientSyncError
from edge_node.usage.quotas import calendar_month
from sync.postgres import translated

if TYPE_CHECKING:
    from sync.postgres import Connection

# How long past a lease's deadline (the central clock's) its unreported units stay the
# node's: room for the two machines' clocks to run at slightly different rates, and for the
# claim's own round trip.
RECLAIM_GRACE_SECONDS = 5
# How far apart a node's clock and the central database's may be at a month's turn.
PERIOD_TOLERANCE = timedelta(minutes=5)

# The transaction's time is read once and passed to every statement: Citus refuses functions
# that are not IMMUTABLE, now() among them, in the DO UPDATE of a distributed table.
_NOW = "SELECT now()"
# No row back: the tenant was deleted (0008's refusal trigger), and nothing is granted.
_PERIOD = """
    INSERT INTO quota_periods (tenant_id, period_start, allowance, updated_at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (tenant_id, period_start)
    DO UPDATE SET allowance = excluded.allowance, updated_at = excluded.updated_at
    RETURNING allowance"""
_RECLAIMABLE = """
    SELECT coalesce(sum(granted - spent), 0) FROM quota_leases
    WHERE tenant_id = $1 AND period_start = $2 AND node_id <> $3 AND granted > spent
      AND expires_at < $4::timestamptz - make_interval(secs => $5)"""
_RECLAIM = """
    UPDATE quota_leases SET granted = spent, updated_at = $4
    WHERE tenant_id = $1 AND period_start = $2 AND node_id <> $3 AND granted > spent
      AND expires_at < $4::timestamptz - make_interval(secs => $5)"""
# With $6 (give back) NULL the node keeps what it was granted; else it keeps its spend plus $6
# and is marked idle, until it spends or asks for units ($8) again. The spend on record comes
# back: a node whose data directory was lost or restored from a backup reports less than it
# had served, and must not serve that difference again.
_OWN = """
    INSERT INTO quota_leases
        (tenant_id, period_start, node_id, granted, spent, expires_at, updated_at)
    VALUES ($1, $2, $3, $4, $4, $5, $7)
    ON CONFLICT (tenant_id, period_start, node_id) DO UPDATE SET
        spent = greatest(quota_leases.spent, excluded.spent),
        granted = CASE WHEN $6::bigint IS NULL
            THEN greatest(quota_leases.granted, quota_leases.spent, excluded.spent)
            ELSE least(greatest(quota_leases.spent, excluded.spent) + $6::bigint,
                       greatest(quota_leases.granted, quota_leases.spent, excluded.spent))
        END,
        idle = CASE WHEN $6::bigint IS NOT NULL THEN true
            WHEN $8::bigint > 0 OR excluded.spent > quota_leases.spent THEN false
            ELSE quota_leases.idle
        END,
        expires_at = excluded.expires_at,
        updated_at = excluded.updated_at
    RETURNING spent"""
_COMMITTED = """
    SELECT coalesce(sum(greatest(granted, spent)), 0), coalesce(sum(spent), 0),
           coalesce(sum(greatest(granted - spent, 0)) FILTER (WHERE node_id <> $3 AND NOT idle), 0)
    FROM quota_leases WHERE tenant_id = $1 AND period_start = $2"""
_GRANT = """
    UPDATE quota_leases SET granted = granted + $4
    WHERE tenant_id = $1 AND period_start = $2 AND node_id = $3
    RETURNING granted"""
_HELD = """
    SELECT granted FROM quota_leases WHERE tenant_id = $1 AND period_start = $2 AND node_id = $3"""


@dataclass(frozen=True)
class Claim:
    """The answer to one claim: what the node now holds in the period, and the fleet's state."""

    granted: int  # every unit the node was given in the period, its spend included
    fleet_spent: int  # what every node has reported spent in the period
    # Nothing is left to grant and no other node holds units it has not reported spent (but
    # the unit an idle node keeps): the allowance is used up (while others hold some, it may
    # not be).
    exhausted: bool
    reclaimed: int  # units this claim took back from other nodes' lapsed leases
    node_spent: int  # this node's spend on record: at least what it reported


async def claim(
    connection: Connection,
    *,
    tenant_id: str,
    period_start: int,
    node_id: str,
    allowance: int,
    spent: int,
    wanted: int,
    lease_seconds: float,
    keep: int | None = None,
) -> Claim:
    """Report `spent` for `node_id`, extend its lease by `lease_seconds`, and grant it up to
    `wanted` more units of `allowance`; with `keep`, give back all it holds unspent but that
    many units (then `wanted` should be 0). One transaction, as the module says."""
    key = (tenant_id, period_start)
    with translated(f"claiming an allowance lease for tenant {tenant_id}"):
        async with connection.transaction():
            now = await connection.fetchval(_NOW)
            _check_period(period_start, now)
            if await connection.fetchval(_PERIOD, *key, allowance, now) is None:
                return Claim(0, 0, True, 0, 0)  # the tenant was deleted
            grace = RECLAIM_GRACE_SECONDS
            reclaimed = await connection.fetchval(_RECLAIMABLE, *key, node_id, now, grace)
            if reclaimed:
                await connection.execute(_RECLAIM, *key, node_id, now, grace)
            expires = now + timedelta(seconds=lease_seconds)
            own_spent = await connection.fetchval(
                _OWN, *key, node_id, spent, expires, keep, now, wanted
            )
            row = await connection.fetchrow(_COMMITTED, *key, node_id)
            committed, fleet_spent, held_elsewhere = (0, 0, 0) if row is None else row
            available = max(0, allowance - int(committed))
            grant = min(max(0, wanted), available)
            if grant:
                granted = await connection.fetchval(_GRANT, *key, node_id, grant)
            else:
                granted = await connection.fetchval(_HELD, *key, node_id)
    exhausted = available - grant <= 0 and held_elsewhere == 0
    return Claim(int(granted), int(fleet_spent), exhausted, int(reclaimed), int(own_spent))


def _check_period(period_start: int, now: datetime) -> None:
    """Refuse a claim for a period the central clock is not in (give or take
    `PERIOD_TOLERANCE`): a node whose clock runs ahead must not take next month's allowance
    early, nor one running behind spend last month's."""
    now_ms = int(now.timestamp() * 1000)
    tolerance_ms = int(PERIOD_TOLERANCE.total_seconds() * 1000)
    near = {calendar_month(now_ms + offset)[0] for offset in (-tolerance_ms, 0, tolerance_ms)}
    if period_start not in near:
        raise TransientSyncError(
            f"the node's billing period starting at {period_start} ms is not the central"
            f" database's ({calendar_month(now_ms)[0]} ms): check both clocks"
        )
