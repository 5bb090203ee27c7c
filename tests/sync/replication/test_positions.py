"""Download checkpoints as text: they round-trip, and anything not ours starts over."""

from __future__ import annotations

import pytest

from sync.replication.positions import Position

DB = "7311/16384"


class TestPosition:
    @pytest.mark.parametrize(
        "position",
        [Position(DB, 0), Position(DB, 2**63 + 5), Position(DB, 812, ("0b7e6a4c", "k1"))],
    )
    def test_a_checkpoint_round_trips(self, position: Position) -> None:
        """What encode() writes, decode() reads back for the same database."""
        assert Position.decode(position.encode(), DB) == position

    @pytest.mark.parametrize(
        "text",
        [
            None,
            "",
            "not json",
            "[]",
            '{"v": 2, "db": "7311/16384", "xid": 5, "after": null}',
            '{"v": 1, "db": "7311/16384", "xid": -1, "after": null}',
            '{"v": 1, "db": "7311/16384", "xid": "5", "after": null}',
            '{"v": 1, "db": "7311/16384", "xid": 5, "after": [1]}',
            '{"v": 1, "db": "9999/1", "xid": 5, "after": null}',
        ],
    )
    def test_anything_else_is_the_start(self, text: str | None) -> None:
        """Missing, malformed, other-version or other-database checkpoints read as the start
        (reading again is harmless; skipping is not)."""
        assert Position.decode(text, DB) == Position.start(DB)

    def test_the_horizon_never_moves_a_position_back(self) -> None:
        """at_horizon() moves forward to the horizon, never behind the position."""
        assert Position(DB, 10).at_horizon(15) == Position(DB, 15)
        assert Position(DB, 10).at_horizon(7) == Position(DB, 10)
        assert Position(DB, 10, ("x",)).at_horizon(10) == Position(DB, 10, ("x",))
