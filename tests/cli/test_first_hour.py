"""The first hour with the command line: the quick start as written, a relative data
directory through backup and restore, read-only commands that create nothing, a deletion
that asks first on a terminal, and help for every option."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest

from edge_node.cli.main import build_parser
from tests.cli.test_cli import Cli, announced_url, clean_environment, edge_node_command


def run_here(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`edge-node ARGS` in `workdir` with no --data-dir: the default ./var."""
    return subprocess.run(
        [*edge_node_command(), *args],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=workdir,
        timeout=60,
        check=False,
    )


def on_a_terminal(cli: Cli, answer: str, *args: str) -> tuple[int, str]:
    """`edge-node ARGS` with a terminal as its input, typing `answer` and Enter when asked."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [*edge_node_command(), "--data-dir", str(cli.data_dir), *args],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(),
        cwd=cli.workdir,
    ) as process:
        os.close(terminal)
        os.write(controller, answer.encode() + b"\n")
        _, stderr = process.communicate(timeout=60)
        os.close(controller)
        return process.returncode, stderr


class TestRelativeDataDirectory:
    def test_backup_restore_then_serving_and_deleting_work_with_the_default_var(
        self, tmp_path: Path
    ) -> None:
        """With the default relative ./var, a tenant, a backup, a restore, then `serve`,
        `tenants list` and `tenants delete` all work: no traceback."""
        created = run_here(tmp_path, "tenants", "create", "--name", "acme")
        assert created.returncode == 0, created.stderr
        tenant = json.loads(created.stdout)
        assert run_here(tmp_path, "backup", "bk").returncode == 0
        restored = run_here(tmp_path, "restore", "bk")
        assert restored.returncode == 0, restored.stderr
        with subprocess.Popen(
            [*edge_node_command(), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_environment(),
            cwd=tmp_path,
        ) as daemon:
            try:
                assert announced_url(daemon, timeout=30).startswith("http://")
            finally:
                daemon.send_signal(signal.SIGTERM)
                _, stderr = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, stderr
        assert "Traceback" not in stderr
        listed = run_here(tmp_path, "tenants", "list")
        assert [t["tenant_id"] for t in json.loads(listed.stdout)] == [tenant["tenant_id"]]
        deleted = run_here(tmp_path, "tenants", "delete", tenant["tenant_id"], "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(run_here(tmp_path, "tenants", "list").stdout) == []


class TestReadOnlyCommands:
    @pytest.mark.parametrize(
        "command",
        [
            ("tenants", "list"),
            ("queue", "status"),
            ("queue", "tail"),
            ("blocks", "list"),
            ("status",),
        ],
    )
    def test_a_missing_data_directory_is_reported_not_created(
        self, cli: Cli, command: tuple[str, ...]
    ) -> None:
        """A command that only reads, pointed at a data directory that does not exist, says
        so and exits 1; the directory is not created."""
        done = cli.run(*command)
        assert done.returncode == 1, done.stdout
        assert f"no data directory at {cli.data_dir}" in done.stderr
        assert "Traceback" not in done.stderr
        assert not cli.data_dir.exists()


class TestTenantDeletion:
    def test_on_a_terminal_it_asks_for_the_tenants_name(self, cli: Cli) -> None:
        """On a terminal, a wrong answer deletes nothing; the tenant's name deletes it."""
        tenant = cli.create_tenant()
        code, stderr = on_a_terminal(cli, "no", "tenants", "delete", tenant["tenant_id"])
        assert code == 1
        assert "cannot be undone" in stderr
        assert "nothing deleted" in stderr
        assert len(cli.json("tenants", "list")) == 1
        code, stderr = on_a_terminal(cli, "acme", "tenants", "delete", tenant["tenant_id"])
        assert code == 0, stderr
        assert cli.json("tenants", "list") == []

    def test_yes_skips_the_question_and_scripts_are_not_asked(self, cli: Cli) -> None:
        """--yes deletes on a terminal without asking; with no terminal nothing is asked."""
        first, second = cli.create_tenant(), cli.create_tenant()
        code, stderr = on_a_terminal(cli, "", "tenants", "delete", first["tenant_id"], "--yes")
        assert (code, stderr) == (0, "")
        done = cli.run("tenants", "delete", second["tenant_id"])
        assert done.returncode == 0, done.stderr
        assert cli.json("tenants", "list") == []


class TestQuickStart:
    def test_create_format_env_sets_tenant_and_key_for_eval(self, cli: Cli) -> None:
        """`eval "$(edge-node tenants create --name acme --format env)"` sets $TENANT and
        $KEY, as the README's quick start uses them."""
        command = " ".join([*edge_node_command(), "--data-dir", str(cli.data_dir)])
        script = f'eval "$({command} tenants create --name acme --format env)"; echo "$TENANT $KEY"'
        done = subprocess.run(
            ["sh", "-c", script],
            capture_output=True,
            text=True,
            env=clean_environment(),
            check=True,
            timeout=60,
        )
        tenant_id, key = done.stdout.split()
        assert cli.json("tenants", "list")[0]["tenant_id"] == tenant_id
        assert key.startswith("enk_")


def every_action(parser: argparse.ArgumentParser, path: str = "edge-node"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_action(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


class TestHelp:
    def test_every_option_and_argument_has_help_text(self) -> None:
        """`--help` of every command explains each of its options and arguments (hidden
        ones, which the supervisor passes its workers, excepted)."""
        missing = [
            f"{path} {action.option_strings or action.dest}"
            for path, action in every_action(build_parser())
            if action.help is None
        ]
        assert missing == []


def with_a_terminal_for_stderr(cli: Cli, *args: str) -> tuple[int, str, str]:
    """`edge-node ARGS` whose stderr is a terminal: its exit status, stdout and what the
    terminal showed."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [*edge_node_command(), "--data-dir", str(cli.data_dir), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
        env=clean_environment(),
        cwd=cli.workdir,
    ) as process:
        os.close(terminal)
        stdout, _ = process.communicate(timeout=60)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once everything written has been read
        while chunk := os.read(controller, 65536):
            shown += chunk
    os.close(controller)
    return process.returncode, stdout, shown.decode(errors="replace")


class TestProgress:
    def test_backup_and_restore_report_progress_on_a_terminal_only(self, cli: Cli) -> None:
        """`backup` and `restore` show what they copy on a terminal (stderr); piped, they
        print only their JSON, the same either way."""
        cli.create_tenant()
        done = cli.run("backup", str(cli.workdir / "plain"))
        assert (done.returncode, done.stderr) == (0, "")
        json.loads(done.stdout)
        code, stdout, shown = with_a_terminal_for_stderr(cli, "backup", str(cli.workdir / "b"))
        assert code == 0
        assert "copying databases: 2 copied" in shown
        assert json.loads(stdout)["databases"] == 2
        code, stdout, shown = with_a_terminal_for_stderr(cli, "restore", str(cli.workdir / "b"))
        assert code == 0, shown
        assert "copying and checking files: 2 restored" in shown
        assert json.loads(stdout)["files"] == 2

    def test_reconcile_reports_what_it_reads_on_a_terminal_only(self, cli: Cli) -> None:
        """`billing reconcile` names each part it reads on a terminal; piped, only JSON."""
        cli.create_tenant()
        done = cli.run("billing", "reconcile", "--json")
        assert (done.returncode, done.stderr) == (0, "")
        code, stdout, shown = with_a_terminal_for_stderr(cli, "billing", "reconcile", "--json")
        assert code == 0, shown
        assert "reconciling: 0 tenant period(s)" in shown
        assert json.loads(stdout)["ok"] is True
