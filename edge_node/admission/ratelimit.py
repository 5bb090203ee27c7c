"""Per-tenant token buckets: refilled at `per_minute` tokens a minute, bursts up to that many."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple


class RateDecision(NamedTuple):
    """A bucket's answer to one request (a NamedTuple: one is made per request, and a frozen
    dataclass takes about twice as long to build)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int


class TokenBucket:
    """Holds up to `capacity` tokens, refilled continuously at `capacity` per minute."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float) -> RateDecision:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        return RateDecision(
            allowed,
            self.capacity,
            int(self.tokens),
            math.ceil((self.capacity - self.tokens) / self.rate),
            0 if allowed else max(1, math.ceil((1.0 - self.tokens) / self.rate)),
        )


class RateLimiter:
    """One bucket per tenant; a changed limit replaces that tenant's bucket with a full one."""

    def __init__(
        self, default_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.default_per_minute = default_per_minute
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, tenant_id: str, per_minute: int | None) -> RateDecision:
        capacity = per_minute or self.default_per_minute
        now = self._clock()
        bucket = self._buckets.get(tenant_id)
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[tenant_id] = TokenBucket(capacity, now)
        return bucket.take(now)
