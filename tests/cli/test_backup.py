"""`edge-node backup DIR` and `restore DIR` run as operators run them, against a serving node."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from edge_node.cli.backup import MANIFEST_NAME, databases_to_back_up
from edge_node.queue import inspect_queue
from tests.ops_support import Node, Serving

EXIT_LOCKED = 75


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    opened = Node.in_directory(tmp_path)
    yield opened
    opened.close()


class WriteLoad:
    """Threads posting new ratings until stopped, noting each one acknowledged (201)."""

    def __init__(self, daemon: Serving, tenants: list[dict[str, Any]], threads: int = 2) -> None:
        self.daemon = daemon
        self.tenants = tenants
        self.acknowledged: list[tuple[str, str, int]] = []
        self.failures: list[object] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(n,)) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _post(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            tenant = self.tenants[n % len(self.tenants)]
            user, score = f"w{worker}-u{n}", n % 5 + 1
            body = {"user_id": user, "item_id": f"item-{n % 3}", "score": score}
            path = f"/v1/tenants/{tenant['tenant_id']}/ratings"
            status, answer = self.daemon.request("POST", path, tenant["api_key"], body)
            if status != 201:
                self.failures.append(answer)
                return
            with self._lock:
                self.acknowledged.append((tenant["tenant_id"], user, score))
            n += 1

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self.acknowledged)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < count:
            assert not self.failures, self.failures
            assert time.monotonic() < deadline, f"only {len(self.snapshot())} writes"
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)
        assert not self.failures, self.failures


def stored_ratings(tenant_file: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{tenant_file}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT user_id, score FROM ratings WHERE deleted = 0"))


def integrity(database: Path) -> str:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


class TestBackupWhileServing:
    def test_backup_under_write_load_is_consistent_and_complete(
        self, node: Node, tmp_path: Path
    ) -> None:
        """A backup taken while ratings are being written: every database passes
        integrity_check, every rating acknowledged before the backup started is in it with
        its score, and the queue copy holds a usage event for each of them."""
        tenants = [node.tenant("acme"), node.tenant("globex")]
        daemon = node.serve()
        load = WriteLoad(daemon, tenants)
        try:
            load.wait_for(100)
            before = load.snapshot()
            backup = tmp_path / "backup"
            summary = node.json("backup", str(backup))
            assert len(load.snapshot()) > len(before), "writes went on while it backed up"
        finally:
            load.stop()
        assert daemon.stop() == 0
        manifest = json.loads((backup / MANIFEST_NAME).read_text())
        databases = [entry["path"] for entry in manifest["files"] if entry["kind"] == "database"]
        assert summary["databases"] == len(databases) == 4  # node, credits, two tenants
        for name in databases:
            assert integrity(backup / name) == "ok", name
        for tenant in tenants:
            ratings = stored_ratings(backup / "tenants" / f"{tenant['tenant_id']}.sqlite")
            expected = {u: s for t, u, s in before if t == tenant["tenant_id"]}
            assert expected.items() <= ratings.items()
        queue = inspect_queue(backup / "queue" / "worker-0")
        assert queue.last_seq >= len(before)
        assert "billing" in queue.consumers

    def test_only_the_named_databases_and_records_are_copied(
        self, node: Node, tmp_path: Path
    ) -> None:
        """A backup holds node.sqlite, the tenant files, the queue and the manifest; another
        database or key file in the data directory (a key store) is left out; the manifest
        records versions, node id and a SHA-256 for every file; a DIR that exists is refused."""
        tenant = node.tenant()
        for name in ("keys.sqlite", "master.key"):
            (node.data_dir / name).write_bytes(b"secret material")
        assert databases_to_back_up(node.data_dir) == [
            Path("node.sqlite"),
            Path("tenants") / f"{tenant['tenant_id']}.sqlite",
        ]
        backup = tmp_path / "backup"
        node.json("backup", str(backup))
        manifest = json.loads((backup / MANIFEST_NAME).read_text())
        assert {"edge_node_version", "sqlite_version", "node_id", "created_at"} <= set(manifest)
        listed = {entry["path"] for entry in manifest["files"]}
        on_disk = {
            path.relative_to(backup).as_posix() for path in backup.rglob("*") if path.is_file()
        }
        assert on_disk == listed | {MANIFEST_NAME}
        assert not {"keys.sqlite", "master.key"} & on_disk
        assert all(len(entry["sha256"]) == 64 for entry in manifest["files"])
        again = node.run("backup", str(backup))
        assert again.returncode == 1
        assert "already exists" in again.stderr


def read_back(daemon: Serving, tenant: dict[str, Any]) -> tuple[Any, Any]:
    base = f"/v1/tenants/{tenant['tenant_id']}"
    ratings = daemon.request("GET", f"{base}/ratings", tenant["api_key"])
    score = daemon.request("GET", f"{base}/items/book/score", tenant["api_key"])
    return ratings, score


class TestRestore:
    def test_restored_node_serves_the_same_rows_and_scores(
        self, node: Node, tmp_path: Path
    ) -> None:
        """Restore refuses (exit 75) while a daemon serves the data directory and changes
        nothing; once it is stopped, restore swaps the backup in, keeps the previous data
        directory, and the restored node serves exactly the rows and scores of the backup."""
        tenant = node.tenant()
        daemon = node.serve()
        path = f"/v1/tenants/{tenant['tenant_id']}/ratings"
        for user, score in (("ana", 5), ("bob", 2), ("ana", 4), ("cy", 3)):
            body = {"user_id": user, "item_id": "book", "score": score, "comment": user}
            assert daemon.request("POST", path, tenant["api_key"], body)[0] in (200, 201)
        backed_up = read_back(daemon, tenant)
        backup = tmp_path / "backup"
        node.json("backup", str(backup))
        body = {"user_id": "late", "item_id": "book", "score": 1}
        assert daemon.request("POST", path, tenant["api_key"], body)[0] == 201
        after_backup = read_back(daemon, tenant)

        refused = node.run("restore", str(backup))
        assert refused.returncode == EXIT_LOCKED
        assert "stop it first" in refused.stderr
        assert read_back(daemon, tenant) == after_backup
        assert daemon.stop() == 0

        restored = node.json("restore", str(backup))
        assert Path(restored["previous_data_dir"]).is_dir()
        assert restored["data_dir"] == str(node.data_dir.resolve())
        daemon = node.serve()
        assert read_back(daemon, tenant) == backed_up
        assert daemon.stop() == 0

    def test_a_damaged_backup_is_refused_and_nothing_changes(
        self, node: Node, tmp_path: Path
    ) -> None:
        """A backup whose file no longer matches its manifest checksum, or that has no
        manifest, is refused (exit 1, naming the fault) and the data directory is untouched."""
        tenant = node.tenant()
        backup = tmp_path / "backup"
        node.json("backup", str(backup))
        node.json("tenants", "create", "--name", "after-backup")
        tenant_file = backup / "tenants" / f"{tenant['tenant_id']}.sqlite"
        content = bytearray(tenant_file.read_bytes())
        content[-1] ^= 0xFF
        tenant_file.write_bytes(bytes(content))
        damaged = node.run("restore", str(backup))
        assert damaged.returncode == 1
        assert "does not match its checksum" in damaged.stderr
        (backup / MANIFEST_NAME).unlink()
        incomplete = node.run("restore", str(backup))
        assert incomplete.returncode == 1
        assert "not a complete backup" in incomplete.stderr
        assert len(node.json("tenants", "list")) == 2
        assert sorted(p.name for p in node.data_dir.parent.iterdir()) == sorted(
            ["backup", "data", "logs"]
        )

    def test_restore_onto_a_new_box_and_through_a_symlinked_data_dir(
        self, node: Node, tmp_path: Path
    ) -> None:
        """Restore fills a data directory that does not exist yet; through a data directory
        that is a symlink (systemd's DynamicUser layout) it replaces the directory the link
        points to and leaves the link in place."""
        first = node.tenant("acme")
        backup = tmp_path / "backup"
        node.json("backup", str(backup))
        fresh = Node(tmp_path / "new-box" / "data", node.logs, env=node.env)
        restored = fresh.json("restore", str(backup))
        assert restored["previous_data_dir"] is None
        assert [t["tenant_id"] for t in fresh.json("tenants", "list")] == [first["tenant_id"]]

        private = tmp_path / "private"
        private.mkdir()
        node.data_dir.rename(private / "edge-node")
        node.data_dir.symlink_to(private / "edge-node")
        node.tenant("after-backup")
        restored = node.json("restore", str(backup))
        assert restored["data_dir"] == str(private / "edge-node")
        assert node.data_dir.is_symlink()
        assert [t["tenant_id"] for t in node.json("tenants", "list")] == [first["tenant_id"]]
        assert Path(restored["previous_data_dir"]).parent == private
