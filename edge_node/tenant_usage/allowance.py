"""The allowance part of the usage answer: what the tenant may use in its quota period, what it
has used there on this node, and the thresholds it crossed (docs/quotas.md).

The quota period is the calendar month in UTC (edge_node.usage.quotas), not the billing
period the rest of the answer is given in, so it comes with its own bounds. Spend is the
node's own count in memory (every worker's served counts), read as admission reads it; for a
fleet-wide `block` allowance (a node with a central database, edge_node.usage.leases) the
other nodes' spend as the central database last reported it is added, and `fleet` says what
this node holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_node.admission.quotas import QuotaRules
from edge_node.admission.router import TenantContext
from edge_node.clock import now_ms
from edge_node.usage.leases import LeaseBook, boottime_ns, lease_state, limit
from edge_node.usage.quotas import PeriodSpend
from edge_node.usage.thresholds import ThresholdLog


def allowance_document(
    rules: QuotaRules,
    spend: PeriodSpend | None,
    thresholds: ThresholdLog | None,
    context: TenantContext,
    leases: LeaseBook | None = None,
) -> dict[str, Any] | None:
    """The tenant's allowance, use and thresholds crossed; None when it has no allowance (or
    nothing is metered, so nothing counts it)."""
    allowance = rules.allowance(context.plan, context.quota, context.quota_policy)
    if allowance is None or spend is None:
        return None
    used = spend.spent_now(context.tenant_id)
    fleet = None
    if leases is not None and allowance.block:
        now = boottime_ns()
        lease = leases.lease(context.tenant_id, now)
        held = limit(lease, spend.start_ms, now)
        used += held.others_spent
        fleet = {
            "used_by_other_nodes": held.others_spent,
            "leased_to_this_node": 0 if lease is None else lease.granted,
            "lease": lease_state(lease, spend.start_ms, now),
        }
    crossed = []
    if thresholds is not None:
        # Admission records a crossing when the next billable request comes; the answer
        # records what the use shows now, so it never lags the figures beside it.
        thresholds.check(context.tenant_id, spend.start_ms, used, allowance.units, now_ms())
        crossed = thresholds.crossed_in(context.tenant_id, spend.start_ms)
    document: dict[str, Any] = {
        "period": {"start": _time(spend.start_ms), "end": _time(spend.end_ms)},
        "allowance": allowance.units,
        "policy": "block" if allowance.block else "overage",
        "used": used,
        "remaining": max(0, allowance.units - used),
        "thresholds_crossed": [
            {
                "percent": entry["threshold"],
                "crossed_at": _time(entry["crossed_at_ms"]),
                "used": entry["spent"],
            }
            for entry in crossed
        ],
    }
    if fleet is not None:
        document["fleet"] = fleet
    return document


def _time(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
