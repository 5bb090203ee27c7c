"""The sync worker's status files read back as the status objects it keeps in memory."""

from __future__ import annotations

from pathlib import Path

from edge_node.clock import format_us
from sync.job_status_file import write_jobs_file
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

    def test_no_files_yet_means_no_shards_and_no_jobs(self, tmp_path: Path) -> None:
        """Before the sync worker published anything there is nothing to report."""
        files = SyncStatusFiles(tmp_path)
        assert (files.status(), files.job_status()) == ([], [])

    def test_times_parse_back_to_the_microsecond(self) -> None:
        """parse_us inverts edge_node.clock.format_us."""
        assert parse_us(format_us(NOW)) == NOW
