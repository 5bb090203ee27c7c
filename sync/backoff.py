"""Capped exponential backoff with jitter, for retrying a shard that failed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """After the n-th consecutive failure wait between half and all of
    min(maximum, initial * 2**(n-1)) seconds: the ceiling doubles (0.5, 1, 2 ... 30 s), and
    the random half spreads the retries of many edge nodes cut off by the same outage."""

    initial: float = 0.5
    maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        doublings = min(max(failures, 1) - 1, 62)
        ceiling = min(self.maximum, self.initial * float(2**doublings))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
