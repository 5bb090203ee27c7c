"""Wall-clock time as edge-node stores and shows it: integer microseconds, RFC 3339 text.

The node's clock never steps back within a process. It is the wall clock anchored to the
monotonic clock: it advances as the monotonic clock does, follows the wall clock whenever
that is ahead (a step forward, an NTP correction at start), and ignores a step back (a
wrongly set clock, a VM restored from a snapshot, a manual `date -s`) until the process
restarts. Everything ordered by time within the node reads it: rating `created_at` and
`updated_at` (cursor order), usage-event timestamps (billing windows) and event ids, so a
rating made after a step back still sorts after those made before it, and usage is not
stamped into an earlier window. A step back of the real time shows as the node running
ahead by that much until it restarts.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


class NodeClock:
    """Nanoseconds since the Unix epoch that never decrease (see the module's docstring)."""

    def __init__(self) -> None:
        self._offset = time.time_ns() - time.monotonic_ns()

    def now_ns(self) -> int:
        # time.time_ns is looked up at each call: a test harness may replace it.
        monotonic = time.monotonic_ns()
        wall = time.time_ns()
        anchored = self._offset + monotonic
        if wall > anchored:  # the wall clock is ahead (stepped forward): follow it
            self._offset = wall - monotonic
            return wall
        return anchored


_CLOCK = NodeClock()


def now_ns() -> int:
    """Nanoseconds since the Unix epoch, never less than an earlier reading in this process."""
    return _CLOCK.now_ns()


def now_us() -> int:
    """Microseconds since the Unix epoch (the node's clock)."""
    return _CLOCK.now_ns() // 1000


def now_ms() -> int:
    """Milliseconds since the Unix epoch (the node's clock)."""
    return _CLOCK.now_ns() // 1_000_000


def format_us(timestamp_us: int) -> str:
    """RFC 3339 in UTC with microseconds, fixed width so text order is time order."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    return f"{_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    # Timestamps written close together share their second: format each second once.
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"
