"""`edge-node serve` with Stripe configured flushes served usage to Stripe, through SIGKILLs."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sync.stripe.standin import DEFAULT_API_KEY
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.sync.stripe.support import StandinProcess
from tests.sync.test_daemon import announced_url, run_cli


@pytest.fixture
def standin_process() -> Iterator[StandinProcess]:
    process = StandinProcess.start()
    yield process
    process.stop()


class Node:
    """A data directory configured for the stand-in, and the daemons started on it."""

    def __init__(self, tmp_path: Path, standin: StandinProcess) -> None:
        self.data_dir = tmp_path / "data"
        key_file = tmp_path / "stripe.key"
        key_file.write_text(DEFAULT_API_KEY + "\n")
        self.env = clean_environment(
            EDGE_NODE_NODE_ID="edge-billing",
            EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
            EDGE_NODE_STRIPE_API_BASE=standin.url,
            EDGE_NODE_STRIPE_TIMEOUT_SECONDS="2",
            EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS="0.2",
            EDGE_NODE_BILLING_WINDOW_SECONDS="1",
            EDGE_NODE_BILLING_POLL_INTERVAL_SECONDS="0.05",
        )
        self.standin = standin
        self.logs = tmp_path
        self.started = 0
        self.served: Counter[str] = Counter()
        self.keys: dict[str, str] = {}
        assert self.cli("stripe", "bootstrap").returncode == 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.data_dir, *args, env=self.env)

    def tenant(self, name: str) -> str:
        created = json.loads(
            self.cli(
                "tenants", "create", "--name", name, "--email", f"billing+{name}@example.com"
            ).stdout
        )
        self.keys[created["tenant_id"]] = created["api_key"]
        return str(created["tenant_id"])

    def start(self) -> tuple[subprocess.Popen[str], str]:
        """A daemon; its stderr goes to a file (a full pipe would stall it), see `log()`."""
        self.started += 1
        with self.log_path().open("w") as log:
            daemon = subprocess.Popen(
                [*edge_node_command(), "--data-dir", str(self.data_dir), "serve", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        return daemon, announced_url(daemon)

    def log_path(self) -> Path:
        return self.logs / f"daemon-{self.started}.log"

    def serve(self, url: str, tenant: str, count: int) -> None:
        """`count` score reads, each billing one unit."""
        for n in range(count):
            request = urllib.request.Request(
                f"{url}/v1/tenants/{tenant}/items/item-{n % 7}/score",
                headers={"X-API-Key": self.keys[tenant]},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            self.served[tenant] += 1

    def customers(self) -> dict[str, str]:
        path = self.data_dir / "node.sqlite"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT tenant_id, stripe_customer_id FROM tenants").fetchall()
        return {tenant: customer for tenant, customer in rows if customer}

    def billed(self) -> dict[str, int]:
        billed = self.standin.admin("state")["billed"]
        customers = self.customers()
        return {tenant: billed.get(customers.get(tenant, ""), 0) for tenant in self.served}

    def wait_until_billed(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.billed() != dict(self.served):
            assert time.monotonic() < deadline, f"billed {self.billed()} != {self.served}"
            time.sleep(0.1)


def stop(daemon: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> int:
    daemon.send_signal(sig)
    code = daemon.wait(timeout=15)
    if daemon.stdout is not None:
        daemon.stdout.close()
    return code


def test_serve_flushes_served_usage_to_stripe_and_stops_cleanly(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """With stripe.api_key_file set, usage served by the daemon reaches Stripe as meter
    events without any other command, billed exactly; SIGTERM stops it (exit 0) and
    `billing reconcile` finds served and billed in agreement."""
    node = Node(tmp_path, standin_process)
    tenants = [node.tenant("acme"), node.tenant("globex")]
    daemon, url = node.start()
    try:
        for n, tenant in enumerate(tenants):
            node.serve(url, tenant, 20 + n)
        node.wait_until_billed()
        assert stop(daemon) == 0
    finally:
        if daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
    assert "Traceback" not in node.log_path().read_text()
    done = node.cli("billing", "reconcile", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sum(day["billed_units"] for day in report["days"]) == sum(node.served.values())
    assert counted_served(report) == dict(node.served)


@pytest.mark.slow
def test_sigkill_at_random_points_of_the_flush_bills_exactly_once(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """The daemon is SIGKILLed again and again while it flushes to a slow Stripe that
    sometimes loses its answers (killed before, during and after calls, between an answer
    and the ledger write); restarted each time, it ends with every customer billed exactly
    the units served: nothing lost, nothing twice."""
    rng = random.Random(5118)
    node = Node(tmp_path, standin_process)
    tenants = [node.tenant(f"tenant-{n}") for n in range(3)]
    standin_process.admin("switches", {"latency": 0.2})
    for round_ in range(6):
        daemon, url = node.start()
        try:
            for tenant in tenants:
                node.serve(url, tenant, rng.randint(5, 15))
            standin_process.admin("switches", {"lose_answers": round_ % 3 == 1})
            time.sleep(rng.uniform(1.5, 4.0))  # windows close after 1 s + 2 s grace
        finally:
            stop(daemon, signal.SIGKILL)
    standin_process.admin("switches", {"lose_answers": False, "latency": 0})
    daemon, _ = node.start()
    try:
        node.wait_until_billed()
        assert stop(daemon) == 0
    finally:
        if daemon.poll() is None:
            stop(daemon, signal.SIGKILL)
    assert "Traceback" not in node.log_path().read_text()
    state = standin_process.admin("state")
    assert state["meter_events"] <= state["calls"]["POST /v1/billing/meter_events"]
    done = node.cli("billing", "reconcile", "--json")
    assert done.returncode == 0, done.stdout
    # Counted where requests were served, in a file each killed daemon left as it was.
    assert counted_served(json.loads(done.stdout)) == dict(node.served)


def counted_served(report: dict[str, object]) -> dict[str, int]:
    """Units served per tenant as `billing reconcile` counted them (not from billing's own
    records: every day must say so)."""
    served: Counter[str] = Counter()
    for day in report["days"]:  # type: ignore[attr-defined]
        assert day["served_counted"] is True
        served[day["tenant_id"]] += day["served"]["units"]
    return dict(served)
