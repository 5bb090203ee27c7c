"""`edge-node serve` runs the sync worker when central.dsns is set, and only then."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.cli.test_cli import announced_url, clean_environment, edge_node_command
from tests.postgres import PostgresServer


def run_cli(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*edge_node_command(), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_request_path_never_loads_sync_asyncpg_or_stripe() -> None:
    """The daemon, the app, the router, the webhook route and the CLI import none of `sync`,
    asyncpg or the Stripe SDK: a standalone node, and the request path of any node, never
    load them (webhook signatures are verified by edge_node itself)."""
    probe = (
        "import sys, edge_node.cli.main, edge_node.cli.daemon, edge_node.http.app,"
        " edge_node.admission.router,"
        " edge_node.tenants.webhooks, edge_node.secrets;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('sync', 'asyncpg', 'stripe')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_serve_syncs_in_the_background_and_stops_on_sigterm(
    tmp_path: Path, central: str, postgres_server: PostgresServer
) -> None:
    """With central.dsns set, a rating posted to a serving node reaches the central database
    without any other command, `sync status` reports the shard healthy, and SIGTERM stops
    the daemon (exit 0) with the worker marked stopped."""
    data_dir = tmp_path / "data"
    env = clean_environment(
        EDGE_NODE_CENTRAL_DSNS=json.dumps([central]),
        EDGE_NODE_CENTRAL_SYNC_INTERVAL_SECONDS="0.1",
        EDGE_NODE_NODE_ID="edge-daemon",
    )
    created = json.loads(run_cli(data_dir, "tenants", "create", "--name", "acme", env=env).stdout)
    daemon = subprocess.Popen(
        [*edge_node_command(), "--data-dir", str(data_dir), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = announced_url(daemon)
        request = urllib.request.Request(
            f"{url}/v1/tenants/{created['tenant_id']}/ratings",
            data=json.dumps({"user_id": "ana", "item_id": "book", "score": 4}).encode(),
            headers={"X-API-Key": created["api_key"], "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        deadline = time.monotonic() + 15
        database = central.rsplit("/", 1)[1]
        while not (origin := postgres_server.sql("SELECT origin_node FROM ratings", database)):
            assert time.monotonic() < deadline, "the rating never reached the central database"
            time.sleep(0.05)
        assert origin == "edge-daemon"

        status = json.loads(run_cli(data_dir, "sync", "status", env=env).stdout)
        assert status["shards"][0]["state"] == "ok"

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        _, stderr = daemon.communicate(timeout=5)
        assert "Traceback" not in stderr
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    status = json.loads(run_cli(data_dir, "sync", "status", env=env).stdout)
    assert status["shards"][0]["state"] == "stopped"


def test_a_dsn_that_is_not_postgresql_stops_serve_at_start(tmp_path: Path) -> None:
    """A central DSN asyncpg cannot take is a configuration error (exit 78) before the node
    listens, not a retry loop; the message does not show the DSN's password."""
    env = clean_environment(EDGE_NODE_CENTRAL_DSNS=json.dumps(["mysql://u:hunter2@db/x"]))
    done = run_cli(tmp_path / "data", "serve", "--port", "0", env=env)
    assert done.returncode == 78
    assert "postgresql://" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "listening" not in done.stdout
