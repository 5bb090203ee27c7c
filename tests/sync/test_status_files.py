"""The sync worker's status files read back as the status objects it keeps in memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from edge_node.clock import format_us
from sync import status_files
from sync.billing.stats import BillingStats
from sync.job_status_file import read_jobs_file, usage_flush_totals, write_jobs_file
from sync.jobs import JobStatus
from sync.status import ShardStatus, write_status_file
from sync.status_files import SyncStatusFiles, parse_us

NOW = 1_764_615_600_123_456  # 2025-12-01T19:00:00.123456Z


class TestSyncStatusFiles:
    def test_shards_and_jobs_round_trip_through_their_files(self, tmp_path: Path) -> None:
        """Every shard and job field written by the sync worker comes back equal (the oldest
        pending write to the millisecond, as the file holds its age)."""
        shard = ShardStatus(
            shard=1,
            dsn="postgresql://sync@db-1/central",
            state="retrying",
            last_attempt_at=NOW - 5_000_000,
            last_success_at=NOW - 65_000_000,
            last_error="connection refused",
            last_error_at=NOW - 5_000_000,
            consecutive_failures=4,
            pending_tenants=3,
            oldest_pending_at=NOW - 42_500_000,
            uploaded_rows=10,
            tenant_failures=2,
            downloaded_through_at=NOW - 70_000_000,
            horizon_lag_xids=7,
        )
        job = JobStatus(
            "stripe-usage-flush", "ok", last_success_at=NOW - 1_000_000, consecutive_failures=0
        )
        write_status_file(tmp_path, "edge-1", [shard], NOW)
        write_jobs_file(tmp_path, "edge-1", [job])
        files = SyncStatusFiles(tmp_path)
        assert files.status() == [shard]
        assert files.job_status() == [job]

    def test_every_usage_flush_counter_round_trips_summed_over_queues(self, tmp_path: Path) -> None:
        """Each counter of the queues' usage flushes comes back from the jobs file as their
        sum; a counter an older file lacks reads as 0, one a newer file adds is ignored."""
        names = [f.name for f in dataclasses.fields(BillingStats)]
        first = BillingStats(**{name: i + 1 for i, name in enumerate(names)})
        second = BillingStats(**{name: 100 * (i + 1) for i, name in enumerate(names)})
        write_jobs_file(tmp_path, "edge-1", [], usage_flush_totals([first, second]))
        summed = BillingStats(**{name: 101 * (i + 1) for i, name in enumerate(names)})
        assert SyncStatusFiles(tmp_path).usage_flush() == [summed]
        write_jobs_file(tmp_path, "edge-1", [], {"calls": 3, "counter_from_a_newer_node": 1})
        assert SyncStatusFiles(tmp_path).usage_flush() == [BillingStats(calls=3)]

    def test_no_files_yet_means_no_shards_and_no_jobs(self, tmp_path: Path) -> None:
        """Before the sync worker published anything there is nothing to report."""
        files = SyncStatusFiles(tmp_path)
        assert (files.status(), files.job_status()) == ([], [])

    def test_a_scrape_parses_the_jobs_file_once_and_a_new_one_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The jobs and the usage flush's counters come from one read of an unchanged file;
        a file replaced since (the supervisor renames a new one in) is read again."""
        reads: list[Path] = []

        def counting(data_dir: Path) -> dict[str, Any] | None:
            reads.append(data_dir)
            return read_jobs_file(data_dir)

        monkeypatch.setattr(status_files, "read_jobs_file", counting)
        first = JobStatus("stripe-usage-flush", "ok", consecutive_failures=0)
        write_jobs_file(tmp_path, "edge-1", [first])
        files = SyncStatusFiles(tmp_path)
        assert files.job_status() == [first]
        assert files.usage_flush() == []
        assert len(reads) == 1
        second = dataclasses.replace(first, state="retrying", consecutive_failures=1)
        write_jobs_file(tmp_path, "edge-1", [second])
        assert files.job_status() == [second]
        assert len(reads) == 2

    def test_times_parse_back_to_the_microsecond(self) -> None:
        """parse_us inverts edge_node.clock.format_us."""
        assert parse_us(format_us(NOW)) == NOW
