"""A tenant's allowance per billing period, applied when a billable request is admitted.

The allowance is the tenant's own (`tenants create/update --quota`, with `--quota-policy`)
or else its plan's (`[quotas.<plan>]`); a plan whose allowance is 0 has none, and its tenants'
usage is not limited. Spend is edge_node.usage.quotas': the units served in the period.
Past the allowance, `overage` serves (the usage is billed as always) and `block` answers 429
`quota-exhausted` with Retry-After at the period's end (docs/quotas.md).
"""

from __future__ import annotations

from edge_node.config import PlanQuotaConfig, QuotasConfig
from edge_node.errors import Problem, QuotaExhausted, QuotaUnavailable
from edge_node.tenants.model import Plan, QuotaPolicy
from edge_node.usage.leases import CUT_OFF_RETRY_AFTER, RENEWING_RETRY_AFTER
from edge_node.usage.quotas import Allowance, QuotaDecision

_UNSET = Allowance(-1, block=False)  # a cache miss (None is a found answer: no allowance)


class QuotaRules:
    """Which allowance applies to a tenant: its own, or its plan's."""

    def __init__(self, config: QuotasConfig) -> None:
        plans: dict[str, PlanQuotaConfig] = {
            "payg": config.payg,
            "tiered": config.tiered,
            "flat": config.flat,
        }
        self._partition = {
            plan: quota.partition_allowance if quota.partition_policy == "local" else 0
            for plan, quota in plans.items()
        }
        self._plans = {
            plan: Allowance(quota.allowance, quota.policy == "block", self._partition[plan])
            for plan, quota in plans.items()
        }
        self._policies = {plan: quota.policy for plan, quota in plans.items()}
        self._made: dict[tuple[str, int | None, str | None], Allowance | None] = {}

    def allowance(
        self, plan: Plan, quota: int | None, policy: QuotaPolicy | None
    ) -> Allowance | None:
        """The allowance of a tenant on `plan` with its own `quota` and `policy` (None: the
        plan's); None when neither sets one. Made once per distinct setting, not per request."""
        key = (plan, quota, policy)
        found = self._made.get(key, _UNSET)
        if found is _UNSET:
            found = self._made[key] = self._make(plan, quota, policy)
        return found

    def _make(self, plan: Plan, quota: int | None, policy: QuotaPolicy | None) -> Allowance | None:
        if len(self._made) >= 4096:
            self._made.clear()
        if quota is None:
            found = self._plans.get(plan)
            if found is None or found.units == 0:
                return None
            if policy is None:
                return found
            return Allowance(found.units, policy == "block", found.partition_units)
        block = (policy or self._policies.get(plan)) == "block"
        return Allowance(quota, block, self._partition.get(plan, 0))


def exhausted(allowance: QuotaDecision, headers: dict[str, str]) -> Problem:
    """The refusal of a request past a `block` allowance: 429 `quota-exhausted` with
    Retry-After at the period's end; or, where this node's lease of a fleet-wide allowance is
    spent and no other can be had just now, 503 `quota-unavailable` (edge_node.usage.leases)."""
    if allowance.refusal != "exhausted":
        wait = CUT_OFF_RETRY_AFTER if allowance.refusal == "cut-off" else RENEWING_RETRY_AFTER
        return QuotaUnavailable(
            "this node cannot admit more of the tenant's allowance for this billing period just"
            " now (its share of the fleet's is spent and no other can be had); nothing was done",
            headers={**headers, "Retry-After": str(wait)},
        )
    return QuotaExhausted(
        f"the tenant's allowance of {allowance.limit} units for this billing period is used"
        f" up; it starts again in {allowance.reset_seconds} s",
        headers={**headers, "Retry-After": str(allowance.reset_seconds)},
    )
