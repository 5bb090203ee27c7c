"""`edge-node status` run as operators run it, against a stopped node and a serving daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node.cli.runtime_file import FILE_NAME as RUNTIME_FILE
from edge_node.node_database import open_node_database
from sync.billing.ledger import BillingLedger
from sync.billing.plan import MeterEventBatch, PlannedRange
from sync.stripe.standin import DEFAULT_API_KEY
from tests.cli.test_cli import clean_environment
from tests.ops_support import Node
from tests.postgres import PostgresServer
from tests.sync.stripe.support import StandinProcess

NOBODY = 65534


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    opened = Node.in_directory(tmp_path)
    yield opened
    opened.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestStoppedNode:
    def test_tenants_by_status_and_nothing_running(self, node: Node) -> None:
        """On a node that never served, status reports the daemon stopped, tenants counted by
        status, no queue yet, PostgreSQL and Stripe not configured, and prints a table."""
        first, _ = node.tenant("acme"), node.tenant("globex")
        node.json("tenants", "suspend", first["tenant_id"])
        status = node.status()
        assert status["daemon"] == {"state": "stopped"}
        assert status["tenants"] == {"active": 1, "suspended": 1}
        assert status["queues"] == []
        assert status["postgres"] == {"configured": False}
        assert status["stripe"]["configured"] is False
        assert status["stripe"]["ledger"]["set_aside"] == {"batches": 0, "units": 0}
        table = node.run("status")
        assert table.returncode == 3, table.stderr  # not running, as an init script says
        rows = {line.split(maxsplit=1)[0]: line for line in table.stdout.splitlines()[1:]}
        assert "stopped" in rows["daemon"]
        assert "2 (1 active, 1 suspended)" in rows["tenants"]
        assert "not configured" in rows["postgres"]

    def test_no_data_directory_is_an_error(self, node: Node) -> None:
        """Status of a data directory that does not exist exits 1 naming it, printing nothing."""
        done = node.run("status")
        assert (done.returncode, done.stdout) == (1, "")
        assert str(node.data_dir) in done.stderr

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
    def test_run_as_root_it_leaves_no_root_owned_file(self, node: Node) -> None:
        """Status run as root on the data directory of a service user (here nobody) leaves
        every file there the service's, SQLite's -wal and -shm included: the daemon can
        still open its databases afterwards."""
        node.tenant()
        for path in [node.data_dir, *node.data_dir.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        for suffix in ("-wal", "-shm"):
            (node.data_dir / f"node.sqlite{suffix}").unlink(missing_ok=True)
        node.status()
        owners = {path.name: path.stat().st_uid for path in node.data_dir.rglob("*")}
        assert "node.sqlite-shm" in owners
        assert set(owners.values()) == {NOBODY}, owners

    def test_set_aside_usage_from_the_billing_ledger(self, node: Node) -> None:
        """Batches the billing ledger set aside are counted with their units, and open ones
        with the age of the oldest."""
        tenant_id = node.tenant()["tenant_id"]
        node_database = open_node_database(node.data_dir)
        ledger = BillingLedger(node_database)
        batches = tuple(
            MeterEventBatch(
                f"id-{n}", tenant_id, "edge_node_requests", 60 * n, 5 + n, 1, "worker-0", n, n
            )
            for n in range(1, 4)
        )
        ledger.record_plan(PlannedRange("worker-0", 1, 3, batches), 1_000_000)
        ledger.set_aside([("id-1", "too old"), ("id-2", "refused")])
        node_database.close()
        ledger_status = node.status()["stripe"]["ledger"]
        assert ledger_status["set_aside"] == {"batches": 2, "units": 6 + 7}
        assert ledger_status["open"] == {"batches": 1, "units": 8}
        assert ledger_status["oldest_open_age_seconds"] > 0
        assert "2 batch(es), 13 units not billed" in node.run("status").stdout


class TestServingDaemon:
    def test_running_daemon_then_clean_stop(self, node: Node) -> None:
        """While serving, status shows the daemon's pid, address and uptime and the queue's
        depth and oldest unconsumed age; after SIGTERM the runtime file is gone and status
        shows the daemon stopped and the queue still there."""
        created = node.tenant()
        daemon = node.serve()
        for n in range(3):
            path = f"/v1/tenants/{created['tenant_id']}/ratings"
            body = {"user_id": f"u{n}", "item_id": "book", "score": 4}
            assert daemon.request("POST", path, created["api_key"], body)[0] == 201
        status = node.status()
        assert status["daemon"]["state"] == "running"
        assert status["daemon"]["pid"] == daemon.process.pid
        assert status["daemon"]["listen"] == [daemon.url]
        assert status["daemon"]["uptime_seconds"] >= 0
        assert status["daemon"]["readiness"] == {"state": "ready", "damaged_tenants": []}
        (queue,) = status["queues"]
        assert (queue["queue"], queue["depth"], queue["last_seq"]) == ("worker-0", 3, 3)
        assert queue["oldest_unconsumed_age_seconds"] >= 0
        shown = node.run("status")
        assert shown.returncode == 0, shown.stderr
        table = shown.stdout
        assert f"pid {daemon.process.pid}" in table
        assert daemon.url in table
        assert f"{'':<10} ready\n" in table
        assert daemon.stop() == 0
        assert not (node.data_dir / RUNTIME_FILE).exists()
        after = node.status()
        assert after["daemon"] == {"state": "stopped"}
        assert after["queues"][0]["depth"] == 3

    def test_damaged_tenant_files_and_a_displaced_node_database(self, node: Node) -> None:
        """Status asks the running daemon's /readyz: a tenant whose file the daemon found
        damaged is listed by id, and node.sqlite replaced underneath shows NOT READY with
        the reason, in the table too."""
        damaged, healthy = node.tenant("damaged"), node.tenant("healthy")
        with (node.data_dir / "tenants" / f"{damaged['tenant_id']}.sqlite").open("r+b") as file:
            file.write(b"\x5a" * 100)
        daemon = node.serve()
        body = {"user_id": "u1", "item_id": "book", "score": 4}
        for tenant, expected in ((damaged, 503), (healthy, 201)):
            path = f"/v1/tenants/{tenant['tenant_id']}/ratings"
            assert daemon.request("POST", path, tenant["api_key"], body)[0] == expected
        readiness = node.status()["daemon"]["readiness"]
        assert readiness == {"state": "ready", "damaged_tenants": [damaged["tenant_id"]]}
        assert f"damaged tenant files: {damaged['tenant_id']}" in node.run("status").stdout
        database = node.data_dir / "node.sqlite"
        copy = database.with_name("node.sqlite.copy")
        copy.write_bytes(database.read_bytes())
        copy.replace(database)
        readiness = node.status()["daemon"]["readiness"]
        assert readiness["state"] == "not ready"
        assert "node.sqlite was replaced under the running node" in readiness["detail"]
        assert "NOT READY: " in node.run("status").stdout
        assert daemon.stop() == 0

    def test_a_refused_second_daemon_leaves_the_first_ones_record(self, node: Node) -> None:
        """A second `serve` on the data directory exits 75 and status still shows the first
        daemon running, with its own pid."""
        daemon = node.serve()
        assert node.run("serve", "--port", "0").returncode == 75
        status = node.status()["daemon"]
        assert (status["state"], status["pid"]) == ("running", daemon.process.pid)

    def test_killed_daemon_leaves_a_stale_runtime_file(self, node: Node) -> None:
        """A daemon killed with SIGKILL is reported stopped (stale, its pid gone), not running."""
        daemon = node.serve()
        pid = daemon.process.pid
        daemon.stop(signal.SIGKILL)
        status = node.status()["daemon"]
        assert (status["state"], status["pid"]) == ("stale", pid)
        assert "did not stop cleanly" in node.run("status").stdout


class TestSyncStatus:
    def test_postgres_last_success(
        self, node: Node, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """With a reachable central PostgreSQL, status shows the shard ok with its last
        successful sync, while the daemon runs and after it stopped."""
        node.env = clean_environment(
            EDGE_NODE_CENTRAL_DSNS=json.dumps([postgres_dsn]),
            EDGE_NODE_CENTRAL_SYNC_INTERVAL_SECONDS="0.1",
        )
        node.json("central", "migrate", "--dsn", postgres_dsn)
        node.tenant()
        daemon = node.serve()

        def synced_shard() -> dict[str, Any] | None:
            shards = node.status()["postgres"].get("shards", [])
            return shards[0] if shards and shards[0]["last_success_at"] else None

        shard = wait_for(synced_shard, "a successful sync")
        assert (shard["state"], shard["last_error"]) == ("ok", None)
        assert "last success 20" in node.run("status").stdout
        assert daemon.stop() == 0
        assert node.status()["postgres"]["shards"][0]["state"] == "stopped"

    def test_postgres_and_stripe_errors(self, node: Node, tmp_path: Path) -> None:
        """With PostgreSQL and Stripe both unreachable, status shows the shard and the Stripe
        provisioning job retrying, each with its last error."""
        key_file = tmp_path / "stripe.key"
        key_file.write_text("sk_test_unreachable\n")
        port = closed_port()
        node.env = clean_environment(
            EDGE_NODE_CENTRAL_DSNS=json.dumps([f"postgresql://edge@127.0.0.1:{port}/edge"]),
            EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
            EDGE_NODE_STRIPE_API_BASE=f"http://127.0.0.1:{port}",
            EDGE_NODE_STRIPE_TIMEOUT_SECONDS="1",
            EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS="0.1",
        )
        node.tenant()  # not provisioned: the daemon's job keeps trying
        node.serve()

        def failing() -> dict[str, Any] | None:
            status = node.status()
            jobs = {job["name"]: job for job in status["stripe"].get("jobs", [])}
            shards = status["postgres"].get("shards", [])
            provisioning = jobs.get("stripe-provisioning", {})
            if shards and shards[0]["last_error"] and provisioning.get("last_error"):
                return status
            return None

        status = wait_for(failing, "both errors to be reported")
        jobs = {job["name"]: job for job in status["stripe"]["jobs"]}
        assert jobs["stripe-provisioning"]["state"] == "retrying"
        assert jobs["stripe-provisioning"]["consecutive_failures"] >= 1
        assert status["postgres"]["shards"][0]["state"] == "retrying"
        table = node.run("status").stdout
        assert table.count("last error") >= 2

    def test_stripe_last_success_and_confirmed_usage(self, node: Node, tmp_path: Path) -> None:
        """With Stripe answering, status shows the Stripe jobs' last success and the meter
        events confirmed in the billing ledger, units equal to the usage served."""
        standin = StandinProcess.start()
        try:
            key_file = tmp_path / "stripe.key"
            key_file.write_text(DEFAULT_API_KEY + "\n")
            node.env = clean_environment(
                EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
                EDGE_NODE_STRIPE_API_BASE=standin.url,
                EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS="0.1",
                EDGE_NODE_BILLING_WINDOW_SECONDS="1",
                EDGE_NODE_BILLING_POLL_INTERVAL_SECONDS="0.05",
            )
            assert node.run("stripe", "bootstrap").returncode == 0
            created = node.tenant()
            daemon = node.serve()
            for n in range(4):
                path = f"/v1/tenants/{created['tenant_id']}/items/i{n}/score"
                assert daemon.request("GET", path, created["api_key"])[0] == 200

            def confirmed() -> dict[str, Any] | None:
                ledger: dict[str, Any] = node.status()["stripe"]["ledger"]
                return ledger if ledger["confirmed"]["units"] == 4 else None

            ledger = wait_for(confirmed, "the usage to be confirmed by Stripe")
            assert ledger["last_confirmed_at"] is not None
            jobs = {job["name"]: job for job in node.status()["stripe"]["jobs"]}
            assert all(job["last_success_at"] for job in jobs.values()), jobs
            assert set(jobs) == {"stripe-usage-flush", "stripe-provisioning", "stripe-meter-errors"}
            assert "meter events: last confirmed" in node.run("status").stdout
            assert daemon.stop() == 0
            stopped = node.status()["stripe"]["jobs"]
            assert {job["state"] for job in stopped} == {"stopped"}
        finally:
            standin.stop()
