"""Spike detection: a short-window request rate far above an exponentially weighted baseline.

Each key (a tenant, a client IP) counts its requests in fixed windows of `window` seconds.
When a window closes, its rate joins the key's baseline, an exponentially weighted moving
average with half-life `half_life`; windows without a request count as rate 0. While a
window is open, its rate so far is compared with the baseline as it stood when the window
opened: a spike is a window whose rate passes `factor` times that baseline and, whatever
the baseline, the floor `min_rate`. A window is reported at most once, when it passes the
threshold, so a flood is one event per window rather than one per request.

A key seen for the first time has no baseline: its first window is compared with the floor
alone. The detector keeps at most `max_keys` keys; when full it forgets the stalest half.
Pure computation on the caller's clock: no I/O, no locks, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spike:
    """A window whose rate passed the threshold: the key, its rate and its baseline (per s)."""

    key: str
    rate_per_second: float
    baseline_per_second: float


class _Window:
    __slots__ = ("baseline", "count", "started", "threshold")

    def __init__(self, started: float, threshold: int) -> None:
        self.started = started
        self.count = 0
        self.baseline = 0.0
        self.threshold = threshold


class SpikeDetector:
    """Per-key spike detection; `observe` is called once per request and is O(1)."""

    def __init__(
        self,
        *,
        window: float,
        half_life: float,
        factor: float,
        min_rate: float,
        max_keys: int = 100_000,
    ) -> None:
        self.window = window
        self.half_life = half_life
        self.factor = factor
        self.min_rate = min_rate
        self.max_keys = max_keys
        self._keys: dict[str, _Window] = {}

    def observe(self, key: str, now: float) -> Spike | None:
        """Count one request of `key` at `now` (seconds); the spike it completes, if any."""
        state = self._keys.get(key)
        if state is None:
            state = self._start(key, now)
        elif now - state.started >= self.window:
            self._roll(state, now)
        state.count += 1
        if state.count != state.threshold:
            return None
        return Spike(key, state.count / self.window, state.baseline)

    def baseline(self, key: str) -> float | None:
        """The key's baseline rate per second, None for a key not tracked."""
        state = self._keys.get(key)
        return None if state is None else state.baseline

    def __len__(self) -> int:
        return len(self._keys)

    def _start(self, key: str, now: float) -> _Window:
        if len(self._keys) >= self.max_keys:
            self._forget_stalest()
        state = _Window(now, self._threshold(0.0))
        self._keys[key] = state
        return state

    def _roll(self, state: _Window, now: float) -> None:
        """Close the open window (and any empty ones after it) into the baseline."""
        closed = state.count / self.window
        keep = 0.5 ** (self.window / self.half_life)
        baseline = state.baseline * keep + closed * (1 - keep)
        windows = int((now - state.started) // self.window)
        if windows > 1:  # empty windows since: each one decays the baseline toward 0
            baseline *= keep ** (windows - 1)
        state.baseline = baseline
        state.started += windows * self.window
        state.count = 0
        state.threshold = self._threshold(baseline)

    def _threshold(self, baseline: float) -> int:
        """The request count in one window at which it becomes a spike."""
        rate = max(self.min_rate, self.factor * baseline)
        return int(rate * self.window) + 1

    def _forget_stalest(self) -> None:
        by_age = sorted(self._keys.items(), key=lambda item: item[1].started)
        for key, _ in by_age[: max(1, len(by_age) // 2)]:
            del self._keys[key]
