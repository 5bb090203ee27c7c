"""Admission reads the registry from memory, yet a change to node.sqlite reaches every worker.

Two workers (`serve --workers 2`) over real HTTP; the changes are committed by another
process's connection to node.sqlite, as `edge-node keys revoke`, `tenants suspend` and
`tenants delete` or the sync worker commit them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge_node.tenants.model import IssuedKey
from edge_node.tenants.registry import TenantRegistry
from tests.cli.test_supervisor import queue_depths
from tests.served import NotifyListener, ServedNode

WITHIN_SECONDS = 1.0
CONNECTIONS = 12  # urllib opens a connection per request; the kernel spreads them


def score_path(key: IssuedKey) -> str:
    return f"/v1/tenants/{key.tenant_id}/items/book/score"


def answers(node: ServedNode, key: IssuedKey) -> list[tuple[int, str | None]]:
    """Status and problem slug of one request per fresh connection."""
    found = []
    for _ in range(CONNECTIONS):
        status, body, _ = node.request("GET", score_path(key), {"X-API-Key": key.api_key})
        found.append((status, None if status == 200 else body["type"].rsplit(":", 1)[-1]))
    return found


def refused_within(
    node: ServedNode, key: IssuedKey, change: Callable[[], object], expected: tuple[int, str]
) -> float:
    """Commit `change`, then ask on fresh connections until every answer is `expected`;
    the seconds that took, failing past WITHIN_SECONDS."""
    change()
    committed = time.monotonic()
    while True:
        got = answers(node, key)
        taken = time.monotonic() - committed
        if set(got) == {expected}:
            break
        assert taken < WITHIN_SECONDS, got
    assert set(answers(node, key)) == {expected}  # and it stays refused
    return taken


class TestRegistryChangesReachEveryWorker:
    def test_revoked_suspended_and_deleted_are_refused_by_both_workers_within_a_second(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With two workers serving (each has admitted requests from memory), a key revoked,
        a tenant suspended and a tenant deleted by another process are refused on every
        connection within a second of the commit: 401, 403 tenant-suspended, 401."""
        data_dir = tmp_path / "data"
        registry = TenantRegistry.open(data_dir)
        keys = {name: registry.create_tenant(name)[1] for name in ("revoked", "suspended", "gone")}
        node = ServedNode(data_dir, "--workers", "2", notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        notify.wait_for("READY")
        for key in keys.values():
            assert set(answers(node, key)) == {(200, None)}
        depths = queue_depths(data_dir)
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths  # both served

        refused_within(
            node,
            keys["revoked"],
            lambda: registry.revoke_key(keys["revoked"].key_id),
            (401, "invalid-api-key"),
        )
        refused_within(
            node,
            keys["suspended"],
            lambda: registry.set_status(keys["suspended"].tenant_id, "suspended"),
            (403, "tenant-suspended"),
        )
        refused_within(
            node,
            keys["gone"],
            lambda: registry.delete_tenant_rows(keys["gone"].tenant_id),
            (401, "invalid-api-key"),
        )
        registry.close()
        assert node.stop() == 0
