"""Damaged and displaced files under a real daemon: a tenant file that is not a database any
more answers 503 for that tenant alone, never 500; node.sqlite deleted or replaced underneath
fails readiness."""

from __future__ import annotations

import json
import shutil
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
        Retry-After, logged, while another tenant is served."""
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
            assert node.stop() == 0
            log = node.log_text()
            assert "storage fault" in log
            assert "the file is damaged" in log
            assert "Traceback" not in log
        finally:
            node.kill()


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
        answers 503 naming it and the log says so, instead of serving from a file no command
        will ever see again."""
        node = FaultNode(tmp_path / "data", tmp_path / "logs")
        node.tenant("acme")
        try:
            url = node.serve()
            assert _readyz(url)[0] == 200
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
            assert node.stop() == 0
            assert f"was {how} under the running node" in node.log_text()
        finally:
            node.kill()
