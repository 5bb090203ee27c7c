"""The RateLimit-Policy and RateLimit response fields (draft-ietf-httpapi-ratelimit-headers-11).

Both are Structured Field Lists (RFC 9651) of named policies, a String each with Integer
parameters:

    RateLimit-Policy: "minute";q=1000;w=60, "period";q=50000;w=2678400
    RateLimit: "minute";r=998;t=1, "period";r=41234;t=2071234

- `minute`: the tenant's token bucket (edge_node.admission.ratelimit): `q` requests a
  minute; `r` requests left now, `t` seconds until the bucket is full.
- `period`: the tenant's allowance for the billing period (edge_node.admission.quotas), when
  it has one: `q` units per period, `w` the period's length in seconds; `r` units left after
  this request, `t` seconds until the period ends. Under `overage` going past it is billed,
  not refused.
- `credits`: the API key's credits, when it has some (edge_node.tenants.credits): `q` what it
  holds when full (its refill, else its grant), `w` its refill interval if it has one; `r`
  units left, `t` seconds until the next refill.

`rate_limit.legacy_headers` adds the older `RateLimit-Limit`, `-Remaining` and `-Reset` of
the bucket, which the draft dropped, for clients that still read them. A refused request
carries `Retry-After` as well.
"""

from __future__ import annotations

from edge_node.admission.ratelimit import RateDecision
from edge_node.tenants.credits import CreditDecision
from edge_node.usage.quotas import QuotaDecision

MINUTE_POLICY = '"minute"'
PERIOD_POLICY = '"period"'
CREDITS_POLICY = '"credits"'


class RateLimitFields:
    """Makes the fields of a response from the decisions that admitted (or refused) it."""

    def __init__(self, *, legacy: bool = False) -> None:
        self.legacy = legacy
        self._policies: dict[tuple[int, ...], str] = {}  # a tenant's limits change rarely

    def headers(
        self,
        rate: RateDecision,
        quota: QuotaDecision | None = None,
        credit: CreditDecision | None = None,
    ) -> dict[str, str]:
        """The fields for a request the bucket (and the allowance and the key's credits, if
        any) decided on."""
        if quota is None:
            current = f"{MINUTE_POLICY};r={rate.remaining};t={rate.reset_seconds}"
            key: tuple[int, ...] = (rate.limit, -1, 0, -1, 0)
        else:  # one format for both policies: this runs on every request with an allowance
            current = (
                f"{MINUTE_POLICY};r={rate.remaining};t={rate.reset_seconds},"
                f" {PERIOD_POLICY};r={quota.remaining};t={quota.reset_seconds}"
            )
            key = (rate.limit, quota.limit, quota.window_seconds, -1, 0)
        if credit is not None:
            key = (*key[:3], credit.limit, credit.window_seconds)
            current += f", {CREDITS_POLICY};r={credit.remaining}"
            if credit.reset_seconds is not None:
                current += f";t={credit.reset_seconds}"
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policy(key)
        headers = {"RateLimit-Policy": policy, "RateLimit": current}
        if self.legacy:
            headers["RateLimit-Limit"] = str(rate.limit)
            headers["RateLimit-Remaining"] = str(rate.remaining)
            headers["RateLimit-Reset"] = str(rate.reset_seconds)
        if not rate.allowed:
            headers["Retry-After"] = str(rate.retry_after_seconds)
        return headers

    def _policy(self, key: tuple[int, ...]) -> str:
        per_minute, allowance, window, credits, refill_every = key
        policy = f"{MINUTE_POLICY};q={per_minute};w=60"
        if allowance >= 0:
            policy += f", {PERIOD_POLICY};q={allowance};w={window}"
        if credits >= 0:
            policy += f", {CREDITS_POLICY};q={credits}"
            if refill_every:
                policy += f";w={refill_every}"
        if len(self._policies) >= 4096:
            self._policies.clear()
        self._policies[key] = policy
        return policy
