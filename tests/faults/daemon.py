"""A real `edge-node serve` process for fault tests, on a data directory of the test's choosing,
with its settings as EDGE_NODE_* variables, and the tenants it serves."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cli.test_cli import announced_url, clean_environment, edge_node_command

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FaultNode:
    """A data directory, the settings its commands run with, and its daemon once started."""

    data_dir: Path
    logs: Path
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return clean_environment(**self.settings)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*edge_node_command(), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO,
            timeout=120,
            check=False,
        )

    def tenant(self, name: str) -> dict[str, Any]:
        """A new tenant and its API key (`tenants create`), with a rate limit out of the way."""
        done = self.run("tenants", "create", "--name", name, "--rate-limit", "100000000")
        assert done.returncode == 0, done.stderr
        created: dict[str, Any] = json.loads(done.stdout)
        return created

    def serve(self, preexec_fn: Callable[[], None] | None = None) -> str:
        """Start `serve` on a free port; its URL once it listens."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / "serve.log"
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [*edge_node_command(), "--data-dir", str(self.data_dir), "serve", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.env,
                cwd=REPO,
                preexec_fn=preexec_fn,  # noqa: PLW1509 (a resource limit for the child only)
            )
        self.url = announced_url(self.process, log, timeout=60)
        return self.url

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        path = self.logs / "serve.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then the exit status (SIGKILL after 60 s)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
