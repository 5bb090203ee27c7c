"""Rotating the webhook signing secret without a restart: by reload (SIGHUP) or file change."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from edge_node.tenants.webhook_signature import signature_header
from tests.cli.test_cli import announced_url, clean_environment, edge_node_command
from tests.tenants.webhooks.conftest import (
    CURRENT_SECRET,
    WebhookNode,
    WebhookNodeFactory,
    subscription_event,
)

NEW_SECRET = "whsec_new_0d9e8f7a6b5c4d3e2f1a0b9c8d7e"
OLDER_SECRET = "whsec_older_1a2b3c4d5e6f7a8b9c0d1e2f3a4b"


def event(event_id: str) -> dict[str, Any]:
    """A genuine event edge-node takes and records (200) whoever it is about."""
    signed = subscription_event(event_id, int(time.time()), "cus_a")
    signed["type"] = "customer.updated"
    return signed


class TestRotation:
    async def test_rotation_by_reload(self, make_webhook_node: WebhookNodeFactory) -> None:
        """The documented rotation: the old secret moves to the previous-secret file, the new
        one into the secret file, and a reload (what SIGHUP does) makes both accepted while
        an older third secret is refused; emptying the previous file ends the rotation."""
        hooks = await make_webhook_node(previous="")
        assert (await hooks.deliver(event("evt_1"))).status == 200
        assert (await hooks.deliver(event("evt_2"), secrets=(NEW_SECRET,))).status == 400

        hooks.previous_path.write_text(CURRENT_SECRET + "\n")
        hooks.secret_path.write_text(NEW_SECRET + "\n")
        assert hooks.secrets.reload()
        assert (await hooks.deliver(event("evt_3"), secrets=(NEW_SECRET,))).status == 200
        assert (await hooks.deliver(event("evt_4"), secrets=(CURRENT_SECRET,))).status == 200
        refused = await hooks.deliver(event("evt_5"), secrets=(OLDER_SECRET,))
        assert (refused.status, refused.problem) == (400, "invalid-signature")

        hooks.previous_path.write_text("")
        assert hooks.secrets.reload()
        assert (await hooks.deliver(event("evt_6"), secrets=(CURRENT_SECRET,))).status == 400
        assert (await hooks.deliver(event("evt_7"), secrets=(NEW_SECRET,))).status == 200

    async def test_a_changed_file_is_picked_up_without_a_signal(
        self, make_webhook_node: WebhookNodeFactory
    ) -> None:
        """Rewriting the secret file is enough: within secrets.check_interval_seconds of the
        change, requests signed with the new secret are accepted."""
        hooks = await make_webhook_node(**{"secrets.check_interval_seconds": 0.05})
        hooks.secret_path.write_text(NEW_SECRET)
        await asyncio.sleep(0.1)
        assert (await hooks.deliver(event("evt_1"), secrets=(NEW_SECRET,))).status == 200
        assert (await hooks.deliver(event("evt_2"), secrets=(CURRENT_SECRET,))).status == 400

    async def test_an_atomically_replaced_file_is_picked_up(
        self, make_webhook_node: WebhookNodeFactory
    ) -> None:
        """A secret written elsewhere and renamed over the file (a new inode) is picked up."""
        hooks = await make_webhook_node(**{"secrets.check_interval_seconds": 0.05})
        staged = hooks.secret_path.with_suffix(".new")
        staged.write_text(NEW_SECRET)
        staged.replace(hooks.secret_path)
        await asyncio.sleep(0.1)
        assert (await hooks.deliver(event("evt_1"), secrets=(NEW_SECRET,))).status == 200

    async def test_a_reload_with_the_file_missing_keeps_the_old_secret(
        self, hooks: WebhookNode
    ) -> None:
        """A secret file deleted (or unreadable) at reload keeps the secret loaded before:
        the endpoint goes on verifying, and picks up the file once it is back."""
        hooks.secret_path.unlink()
        assert hooks.secrets.reload() is False
        assert (await hooks.deliver(event("evt_1"))).status == 200
        hooks.secret_path.write_text(NEW_SECRET)
        assert hooks.secrets.reload()
        assert (await hooks.deliver(event("evt_2"), secrets=(NEW_SECRET,))).status == 200

    async def test_a_reload_with_the_file_emptied_keeps_the_old_secret(
        self, hooks: WebhookNode
    ) -> None:
        """An empty secret file (a half-written rotation) is refused like a missing one."""
        hooks.secret_path.write_text("")
        assert hooks.secrets.reload() is False
        assert (await hooks.deliver(event("evt_1"))).status == 200

    async def test_a_request_in_flight_during_a_rotation_succeeds(self, hooks: WebhookNode) -> None:
        """A request is judged by the secrets in force when it arrived: a rotation while its
        body is still arriving does not fail it; a request arriving after is judged anew."""
        payload = orjson.dumps(event("evt_1"))
        header = signature_header(payload, [CURRENT_SECRET], int(time.time()))
        body_started = asyncio.Event()
        rotated = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield payload[:10]
            body_started.set()
            await rotated.wait()
            yield payload[10:]

        async def post() -> int:
            async with hooks.node.session.post(
                hooks.node.url + "/v1/webhooks/stripe",
                data=slow_body(),
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ) as response:
                return response.status

        in_flight = asyncio.create_task(post())
        await body_started.wait()
        await asyncio.sleep(0.05)  # the server has started on the request
        hooks.secret_path.write_text(NEW_SECRET)
        assert hooks.secrets.reload()
        rotated.set()
        assert await in_flight == 200
        assert (await hooks.deliver(event("evt_2"))).status == 400


class TestDaemon:
    def test_sighup_reloads_the_secret_in_a_running_daemon(self, tmp_path: Path) -> None:
        """`edge-node serve` re-reads the webhook secret on SIGHUP (file checks turned off, so
        nothing else could): the new secret is accepted and the old one refused, a SIGHUP
        with the file gone keeps the secret and logs an error without the secret in it, and
        the daemon serves on and stops cleanly."""
        secret = tmp_path / "whsec"
        secret.write_text(CURRENT_SECRET + "\n")
        env = clean_environment(
            EDGE_NODE_WEBHOOKS_SECRET_FILE=str(secret),
            EDGE_NODE_SECRETS_CHECK_INTERVAL_SECONDS="0",
            EDGE_NODE_NODE_ID="sighup",
        )
        daemon = subprocess.Popen(
            [*edge_node_command(), "--data-dir", str(tmp_path / "var"), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            url = announced_url(daemon)
            assert deliver(url, "evt_1", CURRENT_SECRET) == 200
            secret.write_text(NEW_SECRET + "\n")
            assert deliver(url, "evt_2", NEW_SECRET) == 400  # not reloaded yet

            daemon.send_signal(signal.SIGHUP)
            assert eventually(lambda: deliver(url, "evt_3", NEW_SECRET) == 200)
            assert deliver(url, "evt_4", CURRENT_SECRET) == 400

            secret.unlink()
            daemon.send_signal(signal.SIGHUP)
            # At the default level (info) the first SIGHUP's "reloaded" line comes first.
            logged = read_stderr_until(daemon, "keeping the secret loaded before")
            # The reload's own summary line may arrive in the same read: look at the error's.
            [error] = [line for line in logged.splitlines() if "keeping the secret" in line]
            assert "webhooks.secret_file" in error
            assert deliver(url, "evt_5", NEW_SECRET) == 200
        finally:
            daemon.terminate()
            assert daemon.wait(timeout=15) == 0
            _, rest = daemon.communicate(timeout=5)
        assert NEW_SECRET not in logged + rest
        assert CURRENT_SECRET not in logged + rest

    def test_an_unreadable_secret_at_start_stops_the_daemon(self, tmp_path: Path) -> None:
        """A configured secret file that is missing at start is a configuration error: exit 78
        with a message naming the setting, rather than a node that refuses every event."""
        env = clean_environment(EDGE_NODE_WEBHOOKS_SECRET_FILE=str(tmp_path / "absent"))
        done = subprocess.run(
            [*edge_node_command(), "--data-dir", str(tmp_path / "var"), "serve", "--port", "0"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 78
        assert "webhooks.secret_file: cannot read" in done.stderr


def deliver(url: str, event_id: str, secret: str) -> int:
    payload = json.dumps(event(event_id)).encode()
    request = urllib.request.Request(
        url + "/v1/webhooks/stripe",
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": signature_header(payload, [secret], int(time.time())),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def eventually(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def read_stderr_until(process: subprocess.Popen[str], needle: str, timeout: float = 10.0) -> str:
    """The daemon's stderr up to and including `needle`. Read from the descriptor itself:
    a buffered readline() could leave lines that arrived together unseen by select()."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while needle not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, seen
            assert selector.select(timeout=remaining), seen
            chunk = os.read(fd, 65536).decode()
            assert chunk, f"the daemon closed stderr: {seen}"
            seen += chunk
    return seen
