"""Start-up failures of the machine's making are one line naming what to fix, with the sysexits
status docs/operations.md lists, never a traceback."""

from __future__ import annotations

import resource
import socket
import sqlite3
import subprocess
from pathlib import Path

from tests.cli.test_cli import clean_environment, edge_node_command
from tests.faults.daemon import REPO, FaultNode
from tests.faults.filesystems import small_tmpfs


def _serve(
    data_dir: Path, *args: str, limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    def lower() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run(
        [*edge_node_command(), "--data-dir", str(data_dir), "serve", *args],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=REPO,
        timeout=60,
        check=False,
        preexec_fn=lower,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    return lines[0]


class TestStartupFailures:
    def test_a_taken_port_is_one_line_and_exit_71(self, tmp_path: Path) -> None:
        """Another process listening on the port: EX_OSERR and a line naming the address."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = _serve(tmp_path / "data", "--port", str(port))
        assert done.returncode == 71, done.stderr
        line = _one_line(done)
        assert f"'127.0.0.1', {port}" in line
        assert "address already in use" in line
        assert "server.port" in line

    def test_a_read_only_data_directory_is_one_line_and_exit_73(self, tmp_path: Path) -> None:
        """A data directory on a filesystem remounted read-only: EX_CANTCREAT, one line."""
        with small_tmpfs(tmp_path / "mnt", 8 << 20) as root:
            FaultNode(root / "data", tmp_path / "logs").tenant("ro")
            subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
            done = _serve(root / "data", "--port", "0")
        assert done.returncode == 73, done.stderr
        line = _one_line(done)
        assert "read-only" in line

    def test_too_few_descriptors_is_one_line_and_exit_71(self, tmp_path: Path) -> None:
        """An open-files limit of 64, soft and hard: the line names the limit and LimitNOFILE."""
        done = _serve(tmp_path / "data", "--port", "0", limit=64)
        assert done.returncode == 71, done.stderr
        line = _one_line(done)
        assert "open-files limit is 64" in line
        assert "LimitNOFILE" in line

    def test_a_file_a_newer_release_made_unreadable_is_refused_with_exit_65(
        self, tmp_path: Path
    ) -> None:
        """node.sqlite whose tenants tables a newer release marked as needing more than this
        release knows: serve refuses with one line and EX_DATAERR, the file untouched."""
        node = FaultNode(tmp_path / "data", tmp_path / "logs")
        node.tenant("acme")
        path = node.data_dir / "node.sqlite"
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(
                "CREATE TABLE schema_readers (component TEXT PRIMARY KEY,"
                " min_reader INTEGER NOT NULL) WITHOUT ROWID"
            )
            conn.execute("INSERT INTO schema_readers VALUES ('tenants', 999)")
        conn.close()
        before = path.read_bytes()
        done = _serve(node.data_dir, "--port", "0")
        assert done.returncode == 65, done.stderr
        line = _one_line(done)
        assert "node.sqlite was migrated by a newer edge-node" in line
        assert "schema version 999" in line
        assert path.read_bytes() == before
