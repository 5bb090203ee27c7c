"""Wall-clock time as edge-node stores and shows it: integer microseconds, RFC 3339 text."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


def now_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def format_us(timestamp_us: int) -> str:
    """RFC 3339 in UTC with microseconds, fixed width so text order is time order."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    return f"{_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    # Timestamps written close together share their second: format each second once.
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"
