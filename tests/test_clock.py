"""The node's clock: the wall clock anchored to the monotonic clock, never stepping back."""

from __future__ import annotations

import time

import pytest

from edge_node.clock import NodeClock


class TestNodeClock:
    def test_a_step_back_is_ignored_and_a_step_forward_followed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wall clock stepped back an hour: readings keep advancing with the monotonic
        clock; stepped forward a day: readings follow it."""
        wall, monotonic = [1_000 * 10**9], [5 * 10**9]
        monkeypatch.setattr(time, "time_ns", lambda: wall[0])
        monkeypatch.setattr(time, "monotonic_ns", lambda: monotonic[0])
        clock = NodeClock()
        assert clock.now_ns() == 1_000 * 10**9
        wall[0] -= 3600 * 10**9
        monotonic[0] += 10**6
        assert clock.now_ns() == 1_000 * 10**9 + 10**6
        wall[0] += 86_400 * 10**9 + 3600 * 10**9
        monotonic[0] += 10**6
        assert clock.now_ns() == wall[0]
        monotonic[0] += 10**6
        assert clock.now_ns() == wall[0] + 10**6
