"""The HTTP benchmark's servers: the minimal app and the real daemon, started and stopped.

The baseline is `bench.minimal_app`; the daemon is started as a user would (`edge-node
tenants create`, then `edge-node serve`) in a fresh data directory, and the item the GET
scenarios read is seeded with commented ratings. Each listens on 127.0.0.1, on a port it
picks and announces in its log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.processes import spawn_pinned, stop
from bench.scenarios import RATINGS_PATH, Scenario

SEED_ITEM = "bench-item"
SEED_RATINGS = 60  # on SEED_ITEM, with comments: a list page is full
RATE_LIMIT_PER_MINUTE = "100000000"  # far above anything measured: the bucket never refuses
CREDITS = "1000000000000"  # the credit key's grant: never spent to zero in a run
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Server:
    """A running server and what a request to it needs: path values and credentials."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cpus: set[int] | None
    path_values: Mapping[str, str]
    headers: Mapping[str, str]
    credit_headers: Mapping[str, str] = field(default_factory=dict)  # a key with credits


class ServerPool:
    """Starts each distinct server once, on the server CPU, and stops every one it started."""

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        self._workdir = workdir
        self._cpus = cpus
        self._servers: dict[tuple[str, tuple[tuple[str, str], ...]], Server] = {}
        self._processes: list[subprocess.Popen[bytes]] = []

    def get(self, scenario: Scenario) -> Server:
        key = scenario.server_key
        if key not in self._servers:
            start = self._start_baseline if scenario.server == "baseline" else self._start_daemon
            self._servers[key] = start(scenario.env, f"{scenario.server}-{len(self._servers)}")
        return self._servers[key]

    def close(self) -> None:
        for process in self._processes:
            stop(process, grace=15)  # SIGTERM first: the daemon drains, as in production

    def _launch(self, command: list[str], env: Mapping[str, str], name: str) -> Server:
        log = self._workdir / f"{name}.log"
        with log.open("wb") as out:
            process = spawn_pinned(
                command, self._cpus, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self._processes.append(process)
        return Server(process, wait_listening(process, log), log, self._cpus, {}, {})

    def _start_baseline(self, env: Mapping[str, str], name: str) -> Server:
        command = [sys.executable, "-m", "bench.minimal_app", "--port", "0"]
        server = self._launch(command, server_environ(env), name)
        return replace(server, path_values={"tenant_id": str(uuid.uuid4()), "item_id": SEED_ITEM})

    def _start_daemon(self, env: Mapping[str, str], name: str) -> Server:
        environ = server_environ(env)
        edge_node = [edge_node_executable(), "--data-dir", str(self._workdir / name)]
        create = ["tenants", "create", "--name", "bench", "--rate-limit", RATE_LIMIT_PER_MINUTE]
        created = subprocess.run(
            [*edge_node, *create], env=environ, capture_output=True, check=False, timeout=60
        )
        if created.returncode != 0:
            raise RuntimeError(f"edge-node tenants create failed: {created.stderr.decode()}")
        tenant = json.loads(created.stdout)
        credit_key = subprocess.run(
            [*edge_node, "keys", "create", tenant["tenant_id"], "--credits", CREDITS],
            env=environ,
            capture_output=True,
            check=True,
            timeout=60,
        )
        server = self._launch([*edge_node, "serve", "--port", "0"], environ, name)
        headers = {"X-API-Key": tenant["api_key"]}
        seed_ratings(server.port, tenant["tenant_id"], headers)
        values = {"tenant_id": tenant["tenant_id"], "item_id": SEED_ITEM}
        credit_headers = {"X-API-Key": json.loads(credit_key.stdout)["api_key"]}
        return replace(server, path_values=values, headers=headers, credit_headers=credit_headers)


def server_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without inherited EDGE_NODE_* settings, plus the scenario's own."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    return {**inherited, **extra}


def edge_node_executable() -> str:
    beside = Path(sys.executable).with_name("edge-node")
    found = str(beside) if beside.exists() else shutil.which("edge-node")
    if found is None:
        raise SystemExit("bench: the edge-node command is not installed; run `make install`")
    return found


def wait_listening(process: subprocess.Popen[bytes], log: Path) -> int:
    """The port a starting server announces in its log; an error if it dies or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"{log.stem} did not start listening:\n{log_tail(log)}")


def log_tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def seed_ratings(port: int, tenant_id: str, headers: Mapping[str, str]) -> None:
    """Commented ratings on the item the GET scenarios read: its score is not empty and a
    page of 50 is full."""
    url = f"http://127.0.0.1:{port}{RATINGS_PATH.format(tenant_id=tenant_id)}"
    for index in range(SEED_RATINGS):
        body = {
            "user_id": f"seed-{index}",
            "item_id": SEED_ITEM,
            "score": index % 5 + 1,
            "comment": f"seeded comment number {index}, a sentence of ordinary length",
        }
        data, kind = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data, {**headers, **kind}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 201), response.status
