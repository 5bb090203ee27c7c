"""End to end with processes: `tenants create` and `edge-node serve` provision tenants in a
Stripe stand-in running as its own process, and a tenant works while Stripe is down."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync.stripe.standin import DEFAULT_API_KEY
from tests.cli.test_cli import announced_url, clean_environment, edge_node_command
from tests.sync.stripe.support import StandinProcess

EMAIL = ("--email", "billing@acme.example")


def stripe_environment(tmp_path: Path, standin: StandinProcess) -> dict[str, str]:
    key_file = tmp_path / "stripe.key"
    key_file.write_text(DEFAULT_API_KEY + "\n")
    return clean_environment(
        EDGE_NODE_NODE_ID="edge-stripe",
        EDGE_NODE_STRIPE_API_KEY_FILE=str(key_file),
        EDGE_NODE_STRIPE_API_BASE=standin.url,
        EDGE_NODE_STRIPE_TIMEOUT_SECONDS="2",
        EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS="0.1",
    )


def edge_node(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*edge_node_command(), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def tenant_customers(standin: StandinProcess, tenant_id: str) -> list[dict[str, Any]]:
    customers = standin.admin("state")["customers"]
    return [c for c in customers if c["metadata"].get("tenant_id") == tenant_id]


def stored_link(data_dir: Path, tenant_id: str) -> tuple[str | None, str | None]:
    with sqlite3.connect(data_dir / "node.sqlite") as conn:
        row = conn.execute(
            "SELECT stripe_customer_id, subscription_id FROM tenants WHERE tenant_id = ?",
            (tenant_id,),
        ).fetchone()
    return row[0], row[1]


def eventually(check: Callable[[], bool], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def post_rating(url: str, tenant: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{url}/v1/tenants/{tenant['tenant_id']}/ratings",
        data=json.dumps({"user_id": "ana", "item_id": "book", "score": 4}).encode(),
        headers={"X-API-Key": tenant["api_key"], "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_tenants_create_provisions_at_once_when_stripe_answers(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """After bootstrap, `tenants create` prints the new tenant's customer and subscription,
    stored in node.sqlite, the customer carrying metadata tenant_id."""
    data_dir = tmp_path / "data"
    env = stripe_environment(tmp_path, standin_process)
    assert edge_node(data_dir, env, "stripe", "bootstrap").returncode == 0
    done = edge_node(
        data_dir, env, "tenants", "create", "--name", "acme", "--plan", "tiered", *EMAIL
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["stripe"] == "provisioned"
    (customer,) = tenant_customers(standin_process, created["tenant_id"])
    assert customer["id"] == created["stripe_customer_id"]
    assert (created["email"], customer["email"]) == (EMAIL[1], EMAIL[1])
    (subscription,) = standin_process.admin("state")["subscriptions"]
    assert subscription["collection_method"] == "send_invoice"
    assert stored_link(data_dir, created["tenant_id"]) == (
        created["stripe_customer_id"],
        created["subscription_id"],
    )


def test_a_tenant_works_while_stripe_is_down_and_is_provisioned_once_it_is_back(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """With Stripe failing, `tenants create` succeeds (provisioning pending) and the serving
    daemon answers the tenant at once; when Stripe is back the daemon's sync worker (no
    PostgreSQL configured) provisions it: one customer, one subscription, ids stored."""
    data_dir = tmp_path / "data"
    env = stripe_environment(tmp_path, standin_process)
    assert edge_node(data_dir, env, "stripe", "bootstrap").returncode == 0
    standin_process.admin("switches", {"fail": True})
    done = edge_node(data_dir, env, "tenants", "create", "--name", "acme", *EMAIL)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["stripe"] == "pending"
    assert "sync worker" in done.stderr
    daemon = subprocess.Popen(
        [*edge_node_command(), "--data-dir", str(data_dir), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert post_rating(announced_url(daemon), created) in (200, 201)
        time.sleep(0.5)  # a few failed provisioning rounds
        assert stored_link(data_dir, created["tenant_id"]) == (None, None)
        standin_process.admin("switches", {"fail": False})
        eventually(lambda: None not in stored_link(data_dir, created["tenant_id"]))
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    customer_id, subscription_id = stored_link(data_dir, created["tenant_id"])
    assert [c["id"] for c in tenant_customers(standin_process, created["tenant_id"])] == [
        customer_id
    ]
    subscriptions = standin_process.admin("state")["subscriptions"]
    assert [s["id"] for s in subscriptions] == [subscription_id]


def test_tenants_create_keeps_the_tenant_when_the_key_file_is_unreadable(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """A Stripe key file that cannot be read does not lose the tenant just created: the
    command prints it with its API key and provisioning pending."""
    data_dir = tmp_path / "data"
    env = stripe_environment(tmp_path, standin_process)
    (tmp_path / "stripe.key").unlink()
    done = edge_node(data_dir, env, "tenants", "create", "--name", "acme", *EMAIL)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["api_key"].startswith("enk_")
    assert created["stripe"] == "pending"
    assert "stripe.api_key_file" in created["stripe_error"]


def test_tenants_create_without_an_email_is_refused_while_invoices_are_emailed(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """With Stripe configured and the default collection method (send_invoice), a tenant
    without an address is refused before anything is made, saying why; so is a malformed
    address. With charge_automatically no address is needed."""
    data_dir = tmp_path / "data"
    env = stripe_environment(tmp_path, standin_process)
    refused = edge_node(data_dir, env, "tenants", "create", "--name", "acme")
    assert refused.returncode == 1
    assert "--email is required" in refused.stderr
    assert "send_invoice" in refused.stderr
    malformed = edge_node(data_dir, env, "tenants", "create", "--name", "acme", "--email", "x")
    assert (malformed.returncode, "not an email address" in malformed.stderr) == (1, True)
    assert not (data_dir / "node.sqlite").exists()  # refused before anything was made
    charged = {**env, "EDGE_NODE_STRIPE_COLLECTION_METHOD": "charge_automatically"}
    done = edge_node(data_dir, charged, "tenants", "create", "--name", "acme")
    assert done.returncode == 0, done.stderr
    assert "email" not in json.loads(done.stdout)


def test_tenants_update_email_reaches_stripe_through_the_sync_worker(
    tmp_path: Path, standin_process: StandinProcess
) -> None:
    """`tenants update --email` stores the address and says Stripe has yet to get it; the
    serving daemon's sync worker then updates the customer (one `customer.updated`)."""
    data_dir = tmp_path / "data"
    env = stripe_environment(tmp_path, standin_process)
    assert edge_node(data_dir, env, "stripe", "bootstrap").returncode == 0
    created = json.loads(
        edge_node(data_dir, env, "tenants", "create", "--name", "a", *EMAIL).stdout
    )
    done = edge_node(
        data_dir, env, "tenants", "update", created["tenant_id"], "--email", "new@acme.example"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "tenant_id": created["tenant_id"],
        "email": "new@acme.example",
        "stripe_customer_id": created["stripe_customer_id"],
        "stripe_email": "pending",
    }
    (customer,) = tenant_customers(standin_process, created["tenant_id"])
    assert customer["email"] == EMAIL[1]
    daemon = subprocess.Popen(
        [*edge_node_command(), "--data-dir", str(data_dir), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        announced_url(daemon)
        eventually(
            lambda: (
                tenant_customers(standin_process, created["tenant_id"])[0]["email"]
                == "new@acme.example"
            )
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    unknown = edge_node(
        data_dir, env, "tenants", "update", "00000000-0000-4000-8000-000000000000", *EMAIL
    )
    assert (unknown.returncode, "no tenant" in unknown.stderr) == (1, True)
