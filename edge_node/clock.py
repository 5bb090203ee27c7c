"""Wall-clock time as edge-node stores and shows it: integer microseconds, RFC 3339 text."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def format_us(timestamp_us: int) -> str:
    """RFC 3339 in UTC with microseconds, fixed width so text order is time order."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{micros:06d}Z"
