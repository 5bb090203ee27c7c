"""The clock of the unknown-outcome horizon: wall time that never runs back, even across restarts.

Stripe deduplicates a meter event identifier for 24 hours of its own time, so the age of a
batch sent without a recorded answer must not be understated: a wall clock stepped back an
hour would let a resend through an hour after Stripe forgot the identifier. `HorizonClock`
reads the wall clock but never goes below where it was plus the monotonic time elapsed since:

    now = max(wall, last + (monotonic - monotonic at last))

so a backward step is ignored (the clock runs on at the monotonic rate until the wall catches
up), and a forward step is taken (a batch then looks older, which sets it aside sooner, never
later). Across a restart the monotonic clock starts afresh, so the clock starts no lower than
its floor: the high-water mark persisted in node.sqlite (a named value,
`billing.clock_high_water`, written at most once a minute) and every `first_sent_at` of an
open batch. Time spent stopped while the wall clock was also stepped back is not seen; the
horizon's margin (23 h of Stripe's 24) covers short stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HIGH_WATER = "billing.clock_high_water"
# The high-water mark is persisted once it has moved this far: at most one write a minute.
PERSIST_EVERY_SECONDS = 60.0


class HorizonClock:
    """Unix seconds from `wall`, never below `floor` nor below an earlier reading plus the
    `monotonic` time elapsed since."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        floor: float = 0.0,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._last = max(wall(), floor)
        self._last_monotonic = monotonic()
        self.persisted = floor

    def __call__(self) -> float:
        elapsed = self._monotonic()
        now = max(self._wall(), self._last + max(0.0, elapsed - self._last_monotonic))
        self._last, self._last_monotonic = now, elapsed
        return now

    def due_for_persisting(self) -> float | None:
        """The reading to persist now, or None while the last one persisted is recent."""
        now = self()
        return now if now - self.persisted >= PERSIST_EVERY_SECONDS else None
