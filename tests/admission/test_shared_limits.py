"""Rate-limit buckets shared by the workers of one node (edge_node/admission/shared_limits.py)."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node.admission.shared_limits import SharedRateLimiter, create_buckets

TENANT = "7d4c55a1-0000-4000-8000-000000000001"
OTHER = "7d4c55a1-0000-4000-8000-000000000002"


@pytest.fixture
def table() -> Iterator[int]:
    fd = create_buckets()
    yield fd
    os.close(fd)


def allowed(limiter: SharedRateLimiter, tenant: str, times: int, per_minute: int) -> int:
    return sum(limiter.take(tenant, per_minute).allowed for _ in range(times))


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestOneBudget:
    def test_two_limiters_on_one_file_draw_on_the_same_bucket(self, table: int) -> None:
        """What one worker took, another cannot take again; other tenants are untouched."""
        clock = FrozenClock()
        first, second = (SharedRateLimiter(table, 60, clock) for _ in range(2))
        assert allowed(first, TENANT, 6, 10) == 6
        decision = second.take(TENANT, 10)
        assert (decision.allowed, decision.remaining) == (True, 3)
        assert allowed(second, TENANT, 5, 10) == 3
        assert allowed(first, OTHER, 10, 10) == 10
        clock.now += 6.0  # 10 a minute: one token back every 6 s, whoever took the last
        assert allowed(first, TENANT, 2, 10) == 1
        first.close()
        second.close()

    def test_a_changed_limit_keeps_what_the_bucket_holds_up_to_the_new_size(
        self, table: int
    ) -> None:
        """Workers that disagree on a tenant's limit for a while (one has read a SIGHUP or a
        registry change, another not yet) never refill the bucket for each other: a new
        limit keeps the tokens left, capped at the new size; time that passed under the old
        limit refills at the old rate."""
        clock = FrozenClock()
        old, new = (SharedRateLimiter(table, 60, clock) for _ in range(2))
        assert allowed(old, TENANT, 12, 10) == 10
        for _ in range(5):  # alternating: each change of limit would refill a full bucket
            assert not new.take(TENANT, 20).allowed
            assert not old.take(TENANT, 10).allowed
        clock.now += 30.0  # half a minute under the old limit, 10 a minute
        assert allowed(new, TENANT, 30, 20) == 5
        assert allowed(old, TENANT, 30, 5) == 0  # a smaller limit does not add tokens either
        old.close()
        new.close()

    def test_the_default_limit_applies_when_the_tenant_has_none(self, table: int) -> None:
        clock = FrozenClock()
        limiter = SharedRateLimiter(table, 3, clock)
        assert allowed(limiter, TENANT, 5, None) == 3
        limiter.default_per_minute = 6  # SIGHUP: a new default, no free refill
        clock.now += 10.0  # half a token at the old rate
        assert allowed(limiter, TENANT, 5, None) == 0
        clock.now += 10.0  # and one more at the new one
        assert allowed(limiter, TENANT, 5, None) == 1
        limiter.close()


def _hammer(fd: int, barrier: Any, seconds: float, results: multiprocessing.Queue) -> None:
    limiter = SharedRateLimiter(fd, 60)
    barrier.wait()
    taken, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        taken += limiter.take(TENANT, 600).allowed
    results.put(taken)


class TestAcrossProcesses:
    def test_concurrent_workers_together_get_the_limit_not_a_multiple(self, table: int) -> None:
        """Two processes (forked, as the table's descriptor is passed on to workers) taking
        as fast as they can for 1.5 s from a bucket of 600 a minute: together they get the
        600 and what refilled meanwhile (10 a second), never 600 each, and no update is lost
        to the other process (which would let more through)."""
        context = multiprocessing.get_context("fork")
        results: multiprocessing.Queue = context.Queue()
        barrier = context.Barrier(3)
        workers = [
            context.Process(target=_hammer, args=(table, barrier, 1.5, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        barrier.wait(timeout=60)
        began = time.monotonic()
        counts = [results.get(timeout=60) for _ in workers]
        refilled = (time.monotonic() - began) * 10
        for worker in workers:
            worker.join(timeout=10)
        assert 600 <= sum(counts) <= 600 + refilled + 1, counts
        assert min(counts) > 0, counts  # both took from it, refills at least

    def test_a_worker_killed_holding_a_bucket_lock_does_not_block_the_others(
        self, table: int
    ) -> None:
        """The locks are the kernel's record locks: a process that dies holding one (SIGKILL
        mid-update) releases it, and the next take proceeds."""
        limiter = SharedRateLimiter(table, 60)
        assert limiter.take(TENANT, 10).allowed  # the tenant has its slot now
        (offset,) = limiter._offsets.values()
        ready_read, ready_write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only locks and waits to be killed
            fcntl.lockf(table, fcntl.LOCK_EX, 1, offset)
            os.write(ready_write, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(ready_read, 1)
        taken: list[bool] = []
        taker = threading.Thread(target=lambda: taken.append(limiter.take(TENANT, 10).allowed))
        taker.start()
        taker.join(timeout=0.5)
        assert taker.is_alive(), "the take should wait while another process holds the lock"
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        taker.join(timeout=10)
        assert taken == [True]
        limiter.close()


class TestTheFile:
    def test_a_full_table_falls_back_to_the_workers_own_bucket(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With every slot taken, a further tenant is still limited (per worker), and the
        error is logged once per worker."""
        small = create_buckets(slots=1)
        first, second = (SharedRateLimiter(small, 60, FrozenClock()) for _ in range(2))
        assert allowed(first, TENANT, 3, 2) == 2
        with caplog.at_level(logging.ERROR):
            assert allowed(first, OTHER, 3, 2) == 2
            assert allowed(second, OTHER, 3, 2) == 2  # its own bucket: the table is full
            assert allowed(first, OTHER, 3, 2) == 0
        assert sum("is full" in r.getMessage() for r in caplog.records) == 2
        first.close()
        second.close()
        os.close(small)

    def test_each_limiter_closes_only_its_own_descriptor(self, table: int) -> None:
        """A worker's limiter works on a duplicate: closing it leaves the table open for
        the others (and for the supervisor, which hands it to a restarted worker)."""
        first, second = (SharedRateLimiter(table, 60, FrozenClock()) for _ in range(2))
        assert allowed(first, TENANT, 1, 2) == 1
        first.close()
        assert allowed(second, TENANT, 3, 2) == 1
        again = SharedRateLimiter(table, 60, FrozenClock())
        assert allowed(again, TENANT, 1, 2) == 0
        second.close()
        again.close()

    def test_a_descriptor_that_is_not_a_table_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "other"
        path.write_bytes(b"not a buckets table, but long enough to hold a header")
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(ValueError, match="not a rate-limit buckets table"):
                SharedRateLimiter(fd, 60)
        finally:
            os.close(fd)
