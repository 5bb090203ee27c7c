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
from datetime import timedelta
from typing import TYPE_CHECKING

from sync.postgres import translated

if TYPE_CHECKING:
    from sync.postgres import Connection

# How long past a lease's deadline (the central clock's) its unreported units stay the
# node's: room for the two machines' clocks to run at slightly different rates, and for the
# claim's own round trip.
RECLAIM_GRACE_SECONDS = 5

# The transaction's time is read once and passed to every statement: Citus refuses functions
# that are not IMMUTABLE, now() among them, in the DO UPDATE of a distributed table.
_NOW = "SELECT now()"
_PERIOD = """
    INSERT INTO quota_periods (tenant_id, period_start, allowance, updated_at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (tenant_id, period_start)
    DO UPDATE SET allowance = excluded.allowance, updated_at = excluded.updated_at"""
_RECLAIMABLE = """
    SELECT coalesce(sum(granted - spent), 0) FROM quota_leases
    WHERE tenant_id = $1 AND period_start = $2 AND node_id <> $3 AND granted > spent
      AND expires_at < $4::timestamptz - make_interval(secs => $5)"""
_RECLAIM = """
    UPDATE quota_leases SET granted = spent, updated_at = $4
    WHERE tenant_id = $1 AND period_start = $2 AND node_id <> $3 AND granted > spent
      AND expires_at < $4::timestamptz - make_interval(secs => $5)"""
# With $6 (give back) NULL the node keeps what it was granted; else it keeps its spend plus $6.
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
        expires_at = excluded.expires_at,
        updated_at = excluded.updated_at"""
_COMMITTED = """
    SELECT coalesce(sum(greatest(granted, spent)), 0), coalesce(sum(spent), 0),
           coalesce(sum(greatest(granted - spent, 0)) FILTER (WHERE node_id <> $3), 0)
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
    # Nothing is left to grant and no other node holds units it has not reported spent: the
    # allowance is used up (while others still hold some, it may not be).
    exhausted: bool
    reclaimed: int  # units this claim took back from other nodes' lapsed leases


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
            await connection.execute(_PERIOD, *key, allowance, now)
            grace = RECLAIM_GRACE_SECONDS
            reclaimed = await connection.fetchval(_RECLAIMABLE, *key, node_id, now, grace)
            if reclaimed:
                await connection.execute(_RECLAIM, *key, node_id, now, grace)
            expires = now + timedelta(seconds=lease_seconds)
            await connection.execute(_OWN, *key, node_id, spent, expires, keep, now)
            row = await connection.fetchrow(_COMMITTED, *key, node_id)
            committed, fleet_spent, held_elsewhere = (0, 0, 0) if row is None else row
            available = max(0, allowance - int(committed))
            grant = min(max(0, wanted), available)
            if grant:
                granted = await connection.fetchval(_GRANT, *key, node_id, grant)
            else:
                granted = await connection.fetchval(_HELD, *key, node_id)
    exhausted = available - grant <= 0 and held_elsewhere == 0
    return Claim(int(granted), int(fleet_spent), exhausted, int(reclaimed))
