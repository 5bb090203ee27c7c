"""Served-request counts: per tenant and day, in a memory-mapped file that outlives a SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_node.usage.served import (
    INITIAL_SLOTS,
    SYNC_CHECK_EVERY,
    ServedCounter,
    counts_path,
    read_counts,
)

DAY_MS = 86_400_000
TENANT = "8e0c2a4e-0000-4000-8000-00000000000{}"


class TestCounts:
    def test_requests_are_counted_per_tenant_and_utc_day(self, tmp_path: Path) -> None:
        """Each add counts one event and its units under the tenant and the UTC day of its
        timestamp; a reader sees the sums."""
        path = tmp_path / "served" / "worker-0.counts"
        counter = ServedCounter(path)
        counter.add(TENANT.format(1), 5 * DAY_MS + 10, 2)
        counter.add(TENANT.format(1), 5 * DAY_MS + 99, 3)
        counter.add(TENANT.format(1), 6 * DAY_MS, 1)
        counter.add(TENANT.format(2), 5 * DAY_MS, 4)
        assert sorted(read_counts(path)) == [
            (TENANT.format(1), 5, 2, 5),
            (TENANT.format(1), 6, 1, 1),
            (TENANT.format(2), 5, 1, 4),
        ]
        counter.close()

    def test_the_file_grows_and_a_reopened_counter_adds_on(self, tmp_path: Path) -> None:
        """More tenant-days than the initial slots grow the file; reopening it (a restart)
        keeps every count and adds to the same slots."""
        path = tmp_path / "worker-0.counts"
        counter = ServedCounter(path)
        for day in range(INITIAL_SLOTS + 10):
            counter.add(TENANT.format(1), day * DAY_MS, 1)
        counter.close()
        counter = ServedCounter(path)
        counter.add(TENANT.format(1), 3 * DAY_MS, 5)
        counter.close()
        counts = {day: (events, units) for _, day, events, units in read_counts(path)}
        assert len(counts) == INITIAL_SLOTS + 10
        assert counts[3] == (2, 6)
        assert counts[INITIAL_SLOTS + 9] == (1, 1)

    def test_counts_survive_the_process_being_killed(self, tmp_path: Path) -> None:
        """A process that counts and is then SIGKILLed, never closing or syncing the file,
        leaves every count it made: the mapped pages belong to the kernel."""
        path = counts_path(tmp_path / "queue" / "worker-0")
        tenants = [TENANT.format(n) for n in range(3)]
        script = textwrap.dedent(
            f"""
            import os, signal
            from pathlib import Path
            from edge_node.usage.served import ServedCounter
            counter = ServedCounter(Path({str(path)!r}))
            tenants = {tenants!r}
            for n in range(5000):
                counter.add(tenants[n % 3], 1_700_000_000_000, 2)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
        assert done.returncode == -signal.SIGKILL
        counts = read_counts(path)
        assert sum(events for _, _, events, _ in counts) == 5000
        assert sum(units for _, _, _, units in counts) == 10000
        assert len(counts) == 3

    def test_counts_added_in_batches_are_synced_as_often_as_one_by_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The clock is looked at every SYNC_CHECK_EVERY requests counted, however many one
        addition carries: a meter adding a batch at a time syncs the file on time too."""
        monkeypatch.setattr("edge_node.usage.served.SYNC_EVERY_SECONDS", 0)
        synced: list[int] = []

        class Watched(ServedCounter):
            def sync(self) -> None:
                synced.append(1)
                super().sync()

        path = counts_path(tmp_path / "queue" / "worker-0")
        counter = Watched(path)
        for _ in range(SYNC_CHECK_EVERY // 64 - 1):
            counter.add("t", 1_700_000_000_000, 64, events=64)
        assert synced == []
        counter.add("t", 1_700_000_000_000, 64, events=64)
        assert synced == [1]
        counter.close()
        assert read_counts(path) == [
            ("t", 1_700_000_000_000 // 86_400_000, SYNC_CHECK_EVERY, SYNC_CHECK_EVERY)
        ]
