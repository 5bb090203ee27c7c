"""A page of ratings is made straight from SQLite's rows: its timestamps formatted by SQLite."""

from __future__ import annotations

import sqlite3

import pytest

from edge_node.clock import format_us
from edge_node.rating.tenant_store import _rfc3339


class TestTimestampsFormattedBySQLite:
    @pytest.mark.parametrize(
        "timestamp_us",
        [
            0,
            1,
            999_999,
            1_000_000,
            1_700_000_000_123_456,
            1_709_251_199_999_999,
            253402300799_000_000,
        ],
    )
    def test_sqlite_writes_what_format_us_writes(self, timestamp_us: int) -> None:
        """The SQL a page selects its timestamps with gives format_us's text to the microsecond."""
        conn = sqlite3.connect(":memory:")
        (text,) = conn.execute(f"SELECT {_rfc3339('?1')}", (timestamp_us,)).fetchone()
        assert text == format_us(timestamp_us)
