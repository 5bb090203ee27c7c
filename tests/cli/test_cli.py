"""The `edge-node` command run as operators run it: a real process printing JSON, or serving."""

from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_node.ids import is_uuid

EXIT_CONFIG = 78
LISTENING = re.compile(r"^edge-node listening on (https?://127\.0\.0\.1:(\d+)) ")


def edge_node_command() -> list[str]:
    """The installed console script next to this interpreter, else the module it runs."""
    script = Path(sys.executable).with_name("edge-node")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edge_node.cli"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any EDGE_NODE_* setting, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EDGE_NODE_")}
    return {**env, **extra}


@dataclass
class Cli:
    """Runs `edge-node --data-dir <data_dir> ...` in a scratch working directory."""

    data_dir: Path
    workdir: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*edge_node_command(), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            env=clean_environment(),
            cwd=self.workdir,
            timeout=60,
            check=False,
        )

    def run_all(
        self, commands: list[tuple[tuple[str, ...], dict[str, str] | None]]
    ) -> list[tuple[int, str, str]]:
        """Run several commands at once (each start costs the interpreter's imports)."""
        processes = [
            subprocess.Popen(
                [*edge_node_command(), "--data-dir", str(self.data_dir), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env or clean_environment(),
                cwd=self.workdir,
            )
            for args, env in commands
        ]
        results = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=60)
            results.append((process.returncode, stdout, stderr))
        return results

    def json(self, *args: str) -> Any:
        """Run a command that must succeed and print exactly one line of JSON."""
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1, done.stdout
        return json.loads(lines[0])

    def create_tenant(self, *args: str) -> dict[str, Any]:
        return self.json("tenants", "create", "--name", "acme", *args)


def every_stored_byte(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file())


def announced_url(
    process: subprocess.Popen[str],
    log: Path | None = None,
    timeout: float = 15,
    pattern: re.Pattern[str] = LISTENING,
) -> str:
    """The URL a `serve` subprocess announces on its first stdout line (waits `timeout`
    seconds), as `pattern`'s first group reads it; a failure shows the daemon's `log` (its
    stderr file) when there is one."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=timeout)
    stderr = log.read_text() if log is not None and log.exists() else ""
    assert ready, f"the daemon never announced its URL; stderr: {stderr}"
    line = process.stdout.readline()
    match = pattern.match(line)
    assert match, (line, stderr)
    return match.group(1)


class TestTenantCommands:
    def test_create_prints_the_tenant_and_its_first_key(self, cli: Cli) -> None:
        """`tenants create` prints one JSON object: a UUID tenant id, an admin key, defaults;
        and the tenant's own SQLite file exists straight away."""
        created = cli.create_tenant()
        assert is_uuid(created["tenant_id"])
        assert created["api_key"].startswith(f"enk_{created['key_id']}_")
        assert (created["name"], created["status"], created["role"]) == ("acme", "active", "admin")
        assert (created["plan"], created["rate_limit_per_minute"]) == ("payg", None)
        assert (cli.data_dir / "tenants" / f"{created['tenant_id']}.sqlite").is_file()

    def test_create_with_plan_and_rate_limit_then_list(self, cli: Cli) -> None:
        """--plan and --rate-limit are stored; `tenants list` prints every tenant, oldest first,
        without keys."""
        first = cli.create_tenant()
        second = cli.json(
            "tenants", "create", "--name", "globex", "--plan", "tiered", "--rate-limit", "60"
        )
        assert (second["plan"], second["rate_limit_per_minute"]) == ("tiered", 60)
        listed = cli.json("tenants", "list")
        assert [t["tenant_id"] for t in listed] == [first["tenant_id"], second["tenant_id"]]
        assert [(t["plan"], t["rate_limit_per_minute"]) for t in listed] == [
            ("payg", None),
            ("tiered", 60),
        ]
        assert all("api_key" not in t for t in listed)

    def test_key_is_stored_only_as_a_hash(self, cli: Cli) -> None:
        """No file under the data directory holds a key or its secret; node.sqlite has SHA-256s."""
        created = cli.create_tenant()
        issued = cli.json("keys", "create", created["tenant_id"], "--role", "reader")
        keys = (created["api_key"], issued["api_key"])
        stored = every_stored_byte(cli.data_dir)
        for key in keys:
            assert key.encode() not in stored
            secret = key[len("enk_") + 16 + 1 :]  # enk_<16-hex key id>_<secret>
            assert len(secret) >= 40
            assert secret.encode() not in stored
        with sqlite3.connect(cli.data_dir / "node.sqlite") as conn:
            hashes = {row[0] for row in conn.execute("SELECT key_hash FROM api_keys")}
        assert hashes == {hashlib.sha256(key.encode()).hexdigest() for key in keys}


class TestKeyCommands:
    def test_create_key_with_each_role(self, cli: Cli) -> None:
        """`keys create ID --role R` prints one JSON object: a new key with that role."""
        tid = cli.create_tenant()["tenant_id"]
        roles = ("reader", "writer")
        results = cli.run_all([(("keys", "create", tid, "--role", role), None) for role in roles])
        for role, (status, stdout, stderr) in zip(roles, results, strict=True):
            assert status == 0, stderr
            (line,) = stdout.splitlines()
            issued = json.loads(line)
            assert set(issued) == {"key_id", "tenant_id", "role", "api_key"}
            assert (issued["tenant_id"], issued["role"]) == (tid, role)
            assert issued["api_key"].startswith(f"enk_{issued['key_id']}_")

    def test_revoke_key(self, cli: Cli) -> None:
        """`keys revoke KEY_ID` prints the revocation; revoking again keeps the first time."""
        created = cli.create_tenant()
        revoked = cli.json("keys", "revoke", created["key_id"])
        assert (revoked["key_id"], revoked["tenant_id"]) == (
            created["key_id"],
            created["tenant_id"],
        )
        assert re.match(r"^\d{4}-\d\d-\d\dT", revoked["revoked_at"])
        assert cli.json("keys", "revoke", created["key_id"]) == revoked


class TestCommandErrors:
    def test_unknown_tenant_or_key(self, cli: Cli) -> None:
        """Naming a tenant or key that does not exist, or an empty name, exits non-zero with
        the reason on stderr, prints nothing on stdout, and changes nothing."""
        cli.create_tenant()
        before = cli.json("tenants", "list")
        unknown = str(uuid.uuid4())
        commands = {
            ("tenants", "suspend", unknown): unknown,
            ("keys", "create", unknown, "--role", "reader"): unknown,
            ("tenants", "resume", "acme"): "acme",
            ("keys", "revoke", "0123456789abcdef"): "0123456789abcdef",
            ("tenants", "create", "--name", ""): "--name",
        }
        results = cli.run_all([(command, None) for command in commands])
        for (command, named), (status, stdout, stderr) in zip(
            commands.items(), results, strict=True
        ):
            assert status != 0, command
            assert stdout == "", command
            assert "Traceback" not in stderr, stderr
            assert named in stderr, (command, stderr)
        assert cli.json("tenants", "list") == before

    def test_bad_arguments_are_usage_errors(self, cli: Cli) -> None:
        """A non-positive --rate-limit or -n is a usage error (exit 2), not a config error."""
        results = cli.run_all(
            [
                (("tenants", "create", "--name", "x", "--rate-limit", "0"), None),
                (("tenants", "create", "--name", "x", "--rate-limit", "-5"), None),
                (("queue", "tail", "-n", "0"), None),
            ]
        )
        for status, stdout, stderr in results:
            assert status == 2
            assert stdout == ""
            assert "must be a positive integer" in stderr


# How the loader reads each setting is tested in-process in test_config.py; these check that
# the command turns its errors into exit 78 and a message, for file and environment alike.
CONFIG_FILE_ERRORS = {
    "bad-toml": ("[server\nport = 1\n", "not valid TOML"),
    "unknown-key": ("[server]\nprot = 8080\n", "server.prot"),
    "negative-rate-limit": ("[rate_limit]\nper_minute = -3\n", "rate_limit.per_minute"),
}
ENVIRONMENT_ERRORS = {
    "port-not-a-number": ("EDGE_NODE_SERVER_PORT", "abc", "server.port"),
}


class TestConfigErrors:
    def test_invalid_configuration_exits_78_naming_the_key(self, cli: Cli) -> None:
        """A bad config file or EDGE_NODE_* variable exits 78 (EX_CONFIG) with a message
        naming the setting, for plain commands and `serve` alike."""
        commands: list[tuple[tuple[str, ...], dict[str, str] | None]] = []
        expected: list[tuple[str, str]] = []
        for label, (toml, named) in CONFIG_FILE_ERRORS.items():
            path = cli.workdir / f"{label}.toml"
            path.write_text(toml)
            commands.append((("--config", str(path), "tenants", "list"), None))
            expected.append((label, named))
        for label, (variable, value, named) in ENVIRONMENT_ERRORS.items():
            commands.append((("tenants", "list"), clean_environment(**{variable: value})))
            expected.append((label, named))
        commands.append((("serve",), clean_environment(EDGE_NODE_SERVER_PORT="abc")))
        expected.append(("serve", "server.port"))
        results = cli.run_all(commands)
        for (label, named), (status, stdout, stderr) in zip(expected, results, strict=True):
            assert (status, stdout) == (EXIT_CONFIG, ""), (label, status, stderr)
            assert named in stderr, (label, stderr)
            assert "Traceback" not in stderr, stderr


class Daemon:
    """A running `edge-node serve` process and the URL it announced."""

    def __init__(self, cli: Cli) -> None:
        self.stderr_path = cli.workdir / f"serve-{uuid.uuid4().hex[:6]}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*edge_node_command(), "--data-dir", str(cli.data_dir), "serve", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=clean_environment(),
                cwd=cli.workdir,
            )
        try:
            self.url = announced_url(self.process, self.stderr_path)
        except BaseException:
            self.close()
            raise

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(
            self.url + path, data=data, headers=all_headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    def stop(self) -> int:
        """Send SIGTERM and wait (a few seconds at most) for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=5)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def serve(cli: Cli) -> Iterator[Any]:
    daemons: list[Daemon] = []

    def start() -> Daemon:
        daemons.append(Daemon(cli))
        return daemons[-1]

    yield start
    for daemon in daemons:
        daemon.close()


class TestServe:
    def test_serves_stops_on_sigterm_and_restarts_with_its_data(self, cli: Cli, serve: Any) -> None:
        """`serve --port 0` announces its URL on one stdout line, answers, exits 0 on SIGTERM,
        and the next process on the same data dir serves what the first one stored."""
        created = cli.create_tenant()
        headers = {"X-API-Key": created["api_key"]}
        ratings = f"/v1/tenants/{created['tenant_id']}/ratings"
        first = serve()
        assert first.request("GET", "/healthz") == (200, {"status": "ok"})
        status, written = first.request(
            "POST", ratings, headers, {"user_id": "ana", "item_id": "book", "score": 5}
        )
        assert (status, written["score"]) == (201, 5)
        assert first.stop() == 0
        assert first.process.stdout is not None
        assert first.process.stdout.read() == "", "nothing printed after the announcement"
        assert "Traceback" not in first.stderr_path.read_text()

        second = serve()
        assert second.request("GET", ratings, headers) == (
            200,
            {"ratings": [written], "next_cursor": None},
        )
        assert second.stop() == 0

    def test_a_second_daemon_on_the_same_data_dir_refuses_to_start(
        self, cli: Cli, serve: Any
    ) -> None:
        """While one daemon serves a data dir, another on it exits 75 with a clear message."""
        first = serve()
        second = subprocess.run(
            [*edge_node_command(), "--data-dir", str(cli.data_dir), "serve", "--port", "0"],
            capture_output=True,
            text=True,
            env=clean_environment(),
            cwd=cli.workdir,
            timeout=60,
            check=False,
        )
        assert second.returncode == 75
        assert "already serving from this data directory" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.request("GET", "/healthz") == (200, {"status": "ok"})
        assert first.stop() == 0

    def test_cli_changes_reach_the_running_daemon(self, cli: Cli, serve: Any) -> None:
        """Keys issued, tenants suspended and resumed, and keys revoked by the CLI (each
        printing JSON) apply to the daemon's very next request."""
        created = cli.create_tenant()
        tid = created["tenant_id"]
        ratings = f"/v1/tenants/{tid}/ratings"
        daemon = serve()
        reader = cli.json("keys", "create", tid, "--role", "reader")
        assert daemon.request("GET", ratings, {"X-API-Key": reader["api_key"]})[0] == 200

        assert cli.json("tenants", "suspend", tid)["status"] == "suspended"
        status, problem = daemon.request("GET", ratings, {"X-API-Key": reader["api_key"]})
        assert (status, problem["type"]) == (403, "urn:edge-node:problem:tenant-suspended")
        assert cli.json("tenants", "resume", tid)["status"] == "active"

        cli.json("keys", "revoke", reader["key_id"])
        status, problem = daemon.request("GET", ratings, {"X-API-Key": reader["api_key"]})
        assert (status, problem["type"]) == (401, "urn:edge-node:problem:invalid-api-key")
        assert daemon.request("GET", ratings, {"X-API-Key": created["api_key"]})[0] == 200
        assert daemon.stop() == 0
