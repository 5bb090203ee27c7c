"""Test support for the operator commands: `edge-node` and `serve` as real processes with an
environment of the test's choosing, and HTTP requests to the daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cli.test_cli import announced_url, clean_environment, edge_node_command


@dataclass
class Node:
    """A data directory, the environment its commands run with, and daemons started on it."""

    data_dir: Path
    logs: Path
    env: dict[str, str] = field(default_factory=clean_environment)
    daemons: list[Serving] = field(default_factory=list)

    @classmethod
    def in_directory(cls, root: Path) -> Node:
        """A node whose data directory is root/data; logs and working directory root/logs."""
        (root / "logs").mkdir()
        return cls(root / "data", root / "logs")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*edge_node_command(), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.logs,
            timeout=120,
            check=False,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def tenant(self, name: str = "acme") -> dict[str, Any]:
        """A tenant made by `tenants create`, with the billing email Stripe needs to send it
        invoices (required when Stripe is configured)."""
        email = ("--email", "billing@example.com")
        created: dict[str, Any] = self.json("tenants", "create", "--name", name, *email)
        return created

    def status(self) -> dict[str, Any]:
        """`status --json`, whose exit status says whether the daemon runs (0) or not (3)."""
        done = self.run("status", "--json")
        document: dict[str, Any] = json.loads(done.stdout)
        running = document["daemon"]["state"] == "running"
        assert done.returncode == (0 if running else 3), (done.returncode, done.stderr)
        return document

    def serve(self) -> Serving:
        log = self.logs / f"serve-{len(self.daemons)}.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [*edge_node_command(), "--data-dir", str(self.data_dir), "serve", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.env,
                cwd=self.logs,
            )
        daemon = Serving(process, log)
        self.daemons.append(daemon)
        daemon.url = announced_url(process)
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


@dataclass
class Serving:
    """One `edge-node serve` process."""

    process: subprocess.Popen[str]
    log: Path
    url: str = ""

    def request(self, method: str, path: str, api_key: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-API-Key": api_key, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=20)
        self.kill()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
