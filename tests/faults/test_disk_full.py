"""A full disk under load, on a small real filesystem: the daemon never dies and never answers
500, refuses with 503 `storage-unavailable` and Retry-After, stores no write without its usage
event, and recovers by itself once space is freed."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from edge_node.rating.store import TenantStores
from edge_node.sqlite import storage_failure
from tests.faults.daemon import FaultNode
from tests.faults.filesystems import fill, small_tmpfs
from tests.faults.load import Load, Sent, billing_violations, queued_events

FILESYSTEM_BYTES = 48 << 20
RECOVERY_BOUND_SECONDS = 30
TENANTS = ("8e0c2a4e-0000-4000-8000-000000000001", "8e0c2a4e-0000-4000-8000-000000000002")
STORAGE_PROBLEMS = {
    "urn:edge-node:problem:storage-unavailable",
    "urn:edge-node:problem:usage-pending",
}


async def _fill_gradually(ballast: Path) -> None:
    """Fill the filesystem in steps, so the load runs while free space goes to nothing."""
    for _ in range(200):
        written = await asyncio.to_thread(fill, ballast, 1 << 20)
        if written < 1 << 20:
            return
        await asyncio.sleep(0.03)


async def _recovered(load: Load, bound: float, data_dir: Path) -> float:
    """Seconds until /readyz is 200 and a write is stored again, at most `bound`."""
    started = time.monotonic()
    rng = random.Random(1)
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() - started < bound:
            async with session.get(f"{load.url}/readyz") as ready:
                last = f"/readyz {ready.status}: {await ready.text()}"
                if ready.status == 200:
                    sent = await load.one(session, rng)
                    while sent.method != "POST":
                        sent = await load.one(session, rng)
                    if sent.status == 201:
                        return time.monotonic() - started
                    last += f"; then a write got {sent.status} {sent.problem_type}"
            await asyncio.sleep(0.2)
    raise AssertionError(f"not recovered within {bound} s; {last}; {_space(data_dir)}")


def _space(data_dir: Path) -> str:
    largest = sorted((p.stat().st_size, p.name) for p in data_dir.rglob("*") if p.is_file())
    return f"{shutil.disk_usage(data_dir).free} bytes free; largest files {largest[-6:]}"


class TestDiskFull:
    @pytest.mark.parametrize("floor_bytes", [4 << 20, 0], ids=["with-the-floor", "without-a-floor"])
    async def test_a_disk_filled_under_load_is_answered_503_and_recovered_from(
        self, tmp_path: Path, floor_bytes: int
    ) -> None:
        """Filled to the last byte under mixed load: the process lives, nothing answers 500 or
        goes unanswered, refusals are problem+json 503 with Retry-After, /readyz fails; once
        the ballast is deleted the node serves writes and is ready again within 30 s without
        a restart; every stored rating has exactly its one usage event, and every
        acknowledged one is stored. Without a floor the writes reach the full disk itself
        (SQLite's "database or disk is full", the queue's ENOSPC, retried until it works)."""
        with small_tmpfs(tmp_path / "mnt", FILESYSTEM_BYTES) as root:
            node = FaultNode(
                root / "data",
                tmp_path / "logs",
                {
                    "EDGE_NODE_STORAGE_MIN_FREE_BYTES": str(floor_bytes),
                    "EDGE_NODE_QUEUE_MAX_BYTES": str(8 << 20),
                    "EDGE_NODE_QUEUE_SEGMENT_BYTES": str(64 << 10),
                },
            )
            try:
                tenants = [node.tenant(f"full-{n}") for n in range(3)]
                load = Load(node.serve(), tenants)
                stop = asyncio.Event()
                traffic = asyncio.create_task(load.run(stop))
                await asyncio.sleep(1)
                await _fill_gradually(root / "ballast")
                await asyncio.sleep(3)
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{load.url}/readyz") as ready,
                ):
                    assert ready.status == 503
                stop.set()
                await traffic
                assert node.alive(), node.log_text()
                (root / "ballast").unlink()
                recovery = await _recovered(load, RECOVERY_BOUND_SECONDS, root / "data")
                print(f"recovered {recovery:.1f} s after the space was freed")
                assert node.alive()
                statuses = load.statuses()
                print(dict(statuses))
                assert set(statuses) <= {200, 201, 503}, (statuses, node.log_text()[-3000:])
                refused = [sent for sent in load.sent if sent.status == 503]
                assert refused, "the disk never filled under the load"
                assert {sent.problem_type for sent in refused} <= STORAGE_PROBLEMS
                assert all(sent.retry_after for sent in refused)
                assert node.stop() == 0, node.log_text()[-3000:]
                assert "Traceback" not in node.log_text()
                violations = billing_violations(
                    load, node.data_dir, node.data_dir / "queue" / "worker-0"
                )
                assert violations == [], violations[:20]
            finally:
                node.kill()


class TestTenantFileOnAFullDisk:
    def test_a_tenant_file_that_cannot_be_made_is_not_left_half_made(self, tmp_path: Path) -> None:
        """Opening a new tenant's file on a full disk fails with a storage error and leaves no
        file behind (a reader would take an empty one for a tenant without ratings); once
        space is freed the file is made."""
        with small_tmpfs(tmp_path / "mnt", 8 << 20) as root:
            stores = TenantStores(root / "tenants", node_id="edge-test")
            try:
                stores.get(TENANTS[0])
                fill(root / "ballast")
                with pytest.raises((sqlite3.Error, OSError)) as failed:
                    stores.get(TENANTS[1])
                assert storage_failure(failed.value) is not None
                assert not stores.path(TENANTS[1]).exists()
                (root / "ballast").unlink()
                assert stores.get(TENANTS[1]).page().ratings == []
            finally:
                stores.close()


class TestStoppedOnAFullDisk:
    async def test_usage_pending_on_a_disk_that_stays_full_is_written_at_stop(
        self, tmp_path: Path
    ) -> None:
        """Writes carried out while the queue cannot write are answered 503 `usage-pending`,
        their events held in memory. Stopped while the disk is still full, the daemon writes
        them into the room its queue's reserve gives back and exits well within systemd's
        30 s stop timeout: every stored rating has its event, nothing is billed twice."""
        with small_tmpfs(tmp_path / "mnt", 16 << 20) as root:
            node = FaultNode(
                root / "data",
                tmp_path / "logs",
                {
                    "EDGE_NODE_STORAGE_MIN_FREE_BYTES": "0",
                    "EDGE_NODE_QUEUE_MAX_BYTES": str(4 << 20),
                    "EDGE_NODE_QUEUE_SEGMENT_BYTES": str(64 << 10),
                },
            )
            try:
                load = Load(node.serve(), [node.tenant("stays-full")])
                rng = random.Random(3)
                async with aiohttp.ClientSession() as session:
                    for _ in range(60):  # the tenant file's WAL grown, then checkpointed
                        await load.one(session, rng)
                    await asyncio.sleep(2.5)
                    await asyncio.to_thread(fill, root / "ballast")
                    pending = await _until_usage_pending(load, session, rng)
                assert pending, (load.statuses(), node.log_text()[-2000:])
                started = time.monotonic()
                code = node.stop()
                stopped_in = time.monotonic() - started
                print(f"{len(pending)} usage-pending; stopped in {stopped_in:.1f} s, exit {code}")
                assert stopped_in < 25, node.log_text()[-2000:]
                queue_dir = node.data_dir / "queue" / "worker-0"
                assert billing_violations(load, node.data_dir, queue_dir) == []
                billed = {event.request_id for event in queued_events(queue_dir)}
                assert {sent.request_id for sent in pending} <= billed
                assert "released its 1048576-byte reserve" in node.log_text()
            finally:
                node.kill()


async def _until_usage_pending(
    load: Load, session: aiohttp.ClientSession, rng: random.Random
) -> list[Sent]:
    """Concurrent writes on the full disk until some are answered `usage-pending`."""
    for _ in range(10):
        sent = await asyncio.gather(*(load.one(session, rng) for _ in range(12)))
        pending = [s for s in sent if s.problem_type.endswith(":usage-pending")]
        if pending:
            return pending
    return []
