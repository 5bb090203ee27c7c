"""Damaged and displaced files under a real daemon: a tenant file that is not a database any
more answers 503 for that tenant alone, never 500; node.sqlite deleted or replaced underneath
fails readiness."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.faults.daemon import FaultNode


def _post(url: str, tenant: dict[str, Any], user: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{url}/v1/tenants/{tenant['tenant_id']}/ratings",
        data=json.dumps({"user_id": user, "item_id": "i", "score": 4}).encode(),
        headers={"X-API-Key": tenant["api_key"], "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


class TestDamagedTenantFile:
    def test_a_damaged_tenant_file_is_503_for_that_tenant_only(self, tmp_path: Path) -> None:
        """A tenant file whose header is overwritten answers 503 `storage-damaged` with
        Retry-After, logged, while another tenant is served; /readyz stays 200 and lists
        the damaged tenant."""
        node = FaultNode(tmp_path / "data", tmp_path / "logs")
        damaged, healthy = node.tenant("damaged"), node.tenant("healthy")
        path = node.data_dir / "tenants" / f"{damaged['tenant_id']}.sqlite"
        with path.open("r+b") as file:
            file.write(b"\x5a" * 100)
        try:
            url = node.serve()
            status, headers, problem = _post(url, damaged, "u1")
            assert status == 503, problem
            assert problem["type"] == "urn:edge-node:problem:storage-damaged"
            assert headers["Retry-After"]
            assert _post(url, healthy, "u1")[0] == 201
            assert _readyz(url) == (
                200,
                {"status": "ready", "damaged_tenants": [damaged["tenant_id"]]},
            )
            assert node.stop() == 0
            log = node.log_text()
            assert "storage fault" in log
            assert "the file is damaged" in log
            assert f"tenant {damaged['tenant_id']}: its file" in log
            assert "Traceback" not in log
        finally:
            node.kill()


def _webhook(url: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{url}/v1/webhooks/stripe",
        data=b"{}",
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


def _readyz(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


class TestNodeDatabaseUnderneath:
    @pytest.mark.parametrize("how", ["deleted", "replaced"])
    def test_node_sqlite_gone_from_under_the_daemon_fails_readiness(
        self, tmp_path: Path, how: str
    ) -> None:
        """node.sqlite deleted, or replaced by another file, while the daemon runs: /readyz
        answers 503 naming it, the log says so, and tenant requests are refused 503 `not-ready`
        within seconds, instead of served from a registry no command will ever change again."""
        node = FaultNode(tmp_path / "data", tmp_path / "logs")
        tenant = node.tenant("acme")
        try:
            url = node.serve()
            assert _readyz(url)[0] == 200
            assert _post(url, tenant, "before")[0] == 201
            path = node.data_dir / "node.sqlite"
            if how == "deleted":
                path.unlink()
            else:
                copy = path.with_name("node.sqlite.copy")
                shutil.copyfile(path, copy)
                copy.replace(path)
            status, problem = _readyz(url)
            assert status == 503
            assert f"node.sqlite was {how} under the running node" in problem["detail"]
            # Requests too: a key revoked now would be written to a file this node never reads.
            deadline = time.monotonic() + 5
            while (answer := _post(url, tenant, f"u{time.monotonic_ns()}"))[0] == 201:
                assert time.monotonic() < deadline, "still served"
                time.sleep(0.1)
            status, headers, problem = answer
            assert (status, problem["type"]) == (503, "urn:edge-node:problem:not-ready")
            assert headers["Retry-After"] == "30"
            assert "deleted or replaced under the running node" in problem["detail"]
            assert str(node.data_dir) not in problem["detail"]  # the log names the file
            # And Stripe's events: a 2xx for one applied to the old file would end redelivery.
            status, headers, problem = _webhook(url)
            assert (status, problem["type"]) == (503, "urn:edge-node:problem:not-ready")
            assert headers["Retry-After"]
            assert node.stop() == 0
            assert f"was {how} under the running node" in node.log_text()
        finally:
            node.kill()


class TestQueueVerify:
    def test_queue_verify_names_damage_exits_1_and_keeps_a_copy(self, tmp_path: Path) -> None:
        """`edge-node queue verify` on a queue with a flipped byte in an older segment prints
        the segment and offset, exits 1, and copies the segment to quarantine/ without
        changing or deleting it; on an intact queue it exits 0."""
        node = FaultNode(
            tmp_path / "data", tmp_path / "logs", {"EDGE_NODE_QUEUE_SEGMENT_BYTES": "4096"}
        )
        tenant = node.tenant("acme")
        try:
            url = node.serve()
            for n in range(60):
                assert _post(url, tenant, f"u{n}")[0] == 201
            assert node.stop() == 0
        finally:
            node.kill()
        assert node.run("queue", "verify").returncode == 0
        queue_dir = node.data_dir / "queue" / "worker-0"
        first = sorted(queue_dir.glob("*.seg"))[0]
        data = bytearray(first.read_bytes())
        data[600] ^= 0xFF
        first.write_bytes(bytes(data))
        done = node.run("queue", "verify")
        assert done.returncode == 1, done.stderr
        report = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(r["segment"], r["offset"] <= 600) for r in report] == [(str(first), True)]
        assert Path(report[0]["copy"]).read_bytes() == bytes(data)
        assert first.read_bytes() == bytes(data)
        assert "Traceback" not in done.stderr
