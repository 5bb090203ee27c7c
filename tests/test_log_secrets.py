"""`edge-node serve` at debug level, driven through API keys, JWTs, webhooks and Stripe, writes
JSON log lines only and none of the secrets it was given or shown."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import orjson
import pytest

from edge_node.tenants.webhook_signature import signature_header
from edge_node.tenants.webhooks import WEBHOOK_PATH
from tests.cli.test_cli import announced_url, clean_environment, edge_node_command
from tests.metrics.conftest import parse_samples
from tests.sync.stripe.support import StandinProcess
from tests.sync.test_daemon import run_cli
from tests.tenants.webhooks.conftest import subscription_event


@dataclass
class Secrets:
    """Every secret the scenario hands the daemon or sends it."""

    stripe_key: str = field(default_factory=lambda: f"sk_test_{secrets.token_hex(12)}")
    webhook: str = field(default_factory=lambda: f"whsec_{secrets.token_hex(16)}")
    previous_webhook: str = field(default_factory=lambda: f"whsec_{secrets.token_hex(16)}")
    jwt_key: str = field(default_factory=lambda: secrets.token_urlsafe(36))
    sent: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [self.stripe_key, self.webhook, self.previous_webhook, self.jwt_key, *self.sent]


@pytest.fixture
def standin_with_key() -> Iterator[tuple[StandinProcess, Secrets]]:
    """A Stripe stand-in accepting only this test's own secret key."""
    given = Secrets()
    standin = StandinProcess.start(given.stripe_key)
    yield standin, given
    standin.stop()


def call(
    url: str, *, method: str = "GET", headers: dict[str, str], body: bytes | None = None
) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_samples(response.read().decode())


def customer_of(data_dir: Path, tenant_id: str) -> str | None:
    path = data_dir / "node.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT stripe_customer_id FROM tenants WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
    return None if row is None else row[0]


def wait_for(check: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


class Scenario:
    """A data directory, its secret files, the environment of a daemon using them all."""

    def __init__(self, tmp_path: Path, standin: StandinProcess, given: Secrets) -> None:
        self.data_dir, self.given = tmp_path / "data", given
        files = {
            "stripe.key": given.stripe_key,
            "whsec": given.webhook,
            "whsec.previous": given.previous_webhook,
            "jwt.secret": given.jwt_key,
        }
        for name, value in files.items():
            (tmp_path / name).write_text(value + "\n")
        keys = [{"algorithm": "HS256", "file": str(tmp_path / "jwt.secret")}]
        self.env = clean_environment(
            EDGE_NODE_NODE_ID="edge-logs",
            EDGE_NODE_LOGGING_LEVEL="debug",
            EDGE_NODE_AUTH_JWT_KEYS=json.dumps(keys),
            EDGE_NODE_STRIPE_API_KEY_FILE=str(tmp_path / "stripe.key"),
            EDGE_NODE_STRIPE_API_BASE=standin.url,
            EDGE_NODE_STRIPE_TIMEOUT_SECONDS="2",
            EDGE_NODE_STRIPE_PROVISIONING_INTERVAL_SECONDS="0.1",
            EDGE_NODE_WEBHOOKS_SECRET_FILE=str(tmp_path / "whsec"),
            EDGE_NODE_WEBHOOKS_PREVIOUS_SECRET_FILE=str(tmp_path / "whsec.previous"),
            EDGE_NODE_BILLING_WINDOW_SECONDS="1",
            EDGE_NODE_BILLING_POLL_INTERVAL_SECONDS="0.05",
        )
        self.stderr = tmp_path / "daemon.stderr"

    def create_tenant(self) -> dict[str, str]:
        assert run_cli(self.data_dir, "stripe", "bootstrap", env=self.env).returncode == 0
        done = run_cli(
            self.data_dir,
            "tenants",
            "create",
            "--name",
            "acme",
            "--email",
            "a@example.com",
            env=self.env,
        )
        assert done.returncode == 0, done.stderr
        created: dict[str, str] = json.loads(done.stdout)
        self.given.sent.append(created["api_key"])
        return created

    def token(self, tenant_id: str, key: str, ttl: float = 300) -> str:
        claims = {"tenant_id": tenant_id, "role": "admin", "exp": int(time.time() + ttl)}
        token = jwt.encode(claims, key, algorithm="HS256")
        self.given.sent.append(token)
        return token

    def drive(self, url: str, tenant: dict[str, str]) -> None:
        """Every kind of credential, right and wrong, and signed webhook deliveries."""
        tid, key = tenant["tenant_id"], tenant["api_key"]
        ratings, score = f"{url}/v1/tenants/{tid}/ratings", f"{url}/v1/tenants/{tid}/items/b/score"
        rating = orjson.dumps({"user_id": "ana", "item_id": "b", "score": 5})
        json_type = {"Content-Type": "application/json"}
        wrong_key = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        self.given.sent.append(wrong_key)
        forged = self.token(tid, "not-the-node-key-" + secrets.token_hex(16))
        expired = self.token(tid, self.given.jwt_key, ttl=-60)
        headers = {"X-API-Key": key, "X-Request-Id": key, **json_type}  # an id that is a key
        assert call(ratings, method="POST", headers=headers, body=rating) in (200, 201)
        assert call(score, headers={"X-API-Key": key}) == 200
        assert (
            call(score, headers={"Authorization": f"Bearer {self.token(tid, self.given.jwt_key)}"})
            == 200
        )
        for bad in ({"X-API-Key": wrong_key}, {"Authorization": f"Bearer {forged}"}):
            assert call(score, headers=bad) == 401
        assert call(score, headers={"Authorization": f"Bearer {expired}"}) == 401
        assert call(score, headers={"X-API-Key": key, "Authorization": "Bearer x"}) == 400
        wait_for(lambda: customer_of(self.data_dir, tid) is not None)
        customer = customer_of(self.data_dir, tid)
        assert customer is not None
        for n, signer in enumerate((self.given.webhook, self.given.previous_webhook, "whsec_x")):
            event = orjson.dumps(subscription_event(f"evt_{n}", int(time.time()), customer))
            header = signature_header(event, [signer], int(time.time()))
            status = call(
                url + WEBHOOK_PATH,
                method="POST",
                headers={"Stripe-Signature": header, **json_type},
                body=event,
            )
            assert status == (400 if signer == "whsec_x" else 200)


def test_serve_at_debug_level_logs_json_lines_and_no_secret(
    tmp_path: Path, standin_with_key: tuple[StandinProcess, Secrets]
) -> None:
    """Through API keys, JWTs (good, forged, expired), webhooks signed by the current and the
    previous secret and Stripe calls with the key file, the daemon writes only JSON lines,
    debug ones included, carrying request ids; its metrics show the Stripe jobs and the
    usage billed; and no secret used appears anywhere in its output."""
    standin, given = standin_with_key
    scenario = Scenario(tmp_path, standin, given)
    tenant = scenario.create_tenant()
    with scenario.stderr.open("w") as stderr:
        daemon = subprocess.Popen(
            [*edge_node_command(), "--data-dir", str(scenario.data_dir), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=scenario.env,
        )
    try:
        url = announced_url(daemon)
        scenario.drive(url, tenant)
        confirmed = ("edge_node_billing_batches_confirmed_total", frozenset())
        wait_for(lambda: scrape(url).get(confirmed, 0) >= 1)
        samples = scrape(url)
        provisioning = frozenset({("target", "stripe"), ("name", "stripe-provisioning")})
        assert samples[("edge_node_sync_up", provisioning)] == 1
        assert samples[("edge_node_queue_fsync_duration_seconds_count", frozenset())] > 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        stdout, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    output = stdout + scenario.stderr.read_text()
    lines = [json.loads(line) for line in scenario.stderr.read_text().splitlines()]
    assert lines
    assert all(isinstance(line, dict) for line in lines)
    assert {"debug", "info"} <= {line["level"] for line in lines}
    assert any(line.get("request_id") for line in lines)
    for secret in given.all():
        assert secret not in output, f"a secret ({secret[:8]}...) was written to the output"
        if secret.startswith("enk_"):
            assert secret.split("_", 2)[2] not in output  # nor the secret part of the key
