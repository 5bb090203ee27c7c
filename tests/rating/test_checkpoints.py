"""Background checkpoints: written tenant files reach their main database file off the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_node.rating import store as store_module
from edge_node.rating.model import RatingInput
from edge_node.rating.store import (
    BACKSTOP_CHECKPOINT_PAGES,
    HOLD_SECONDS,
    WAL_LIMIT_BYTES,
    TenantStores,
)
from edge_node.sqlite import checkpoint

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"


def rows_in_main_file(path: Path, copy_to: Path) -> int:
    """Rows readable from the database file alone, without its WAL (a copy, to be sure)."""
    shutil.copyfile(path, copy_to)
    conn = sqlite3.connect(copy_to)
    try:
        return int(conn.execute("SELECT count(*) FROM ratings").fetchone()[0])
    finally:
        conn.close()


def delete_files(path: Path) -> None:
    """A tenant file and its WAL and shared memory, deleted as another process would."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def wal_bytes(path: str) -> int:
    return os.stat(path).st_size


class TestBackgroundCheckpoints:
    async def test_written_files_are_checkpointed_in_the_background(self, tmp_path: Path) -> None:
        """Rows written through the loop's connection land in the main file within an interval."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        checkpoint(stores.path(TENANT))  # the schema in the main file, the rows not yet
        for i in range(50):
            store.upsert(RatingInput(f"u{i}", "item", 1 + i % 5, None))
        main_file = stores.path(TENANT)
        assert rows_in_main_file(main_file, tmp_path / "before.sqlite") == 0
        task = asyncio.create_task(stores.run_checkpoints(0.05))
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if rows_in_main_file(main_file, tmp_path / "after.sqlite") == 50:
                    break
            assert rows_in_main_file(main_file, tmp_path / "after.sqlite") == 50
            assert not store.dirty
        finally:
            task.cancel()
            stores.close()

    async def test_a_wal_grown_by_a_burst_gives_its_space_back_once_idle(
        self, tmp_path: Path
    ) -> None:
        """A WAL file keeps the size it grew to (here past the limit, as when checkpoints
        failed on a full disk), and a node whose writes are refused below the free-space floor
        would never write again to restart it: once the file is idle, the background round
        cuts its WAL back under WAL_LIMIT_BYTES."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        wal = f"{stores.path(TENANT)}-wal"
        # As when the checkpoints after each commit failed on a full disk: the WAL grows.
        store._conn.execute("PRAGMA wal_autocheckpoint = 0")
        for i in range(600):
            store.upsert(RatingInput(f"u{i}", f"item-{i % 40}", 1 + i % 5, "x" * 400))
        assert wal_bytes(wal) > WAL_LIMIT_BYTES
        task = asyncio.create_task(stores.run_checkpoints(0.05))
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if wal_bytes(wal) <= WAL_LIMIT_BYTES:
                    break
            assert wal_bytes(wal) <= WAL_LIMIT_BYTES
            assert len(store.page(limit=1000).ratings) == 600
        finally:
            task.cancel()
            stores.close()

    async def test_under_steady_writes_the_wal_stays_bounded(self, tmp_path: Path) -> None:
        """Written without pause, the background PASSIVE checkpoint never catches up with the
        writer, and the WAL would grow with the load: it is started over every few MiB (by
        the background task, else the writer's own checkpoint past BACKSTOP_CHECKPOINT_PAGES),
        so it stays within the backstop's reach."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        wal = f"{stores.path(TENANT)}-wal"
        task = asyncio.create_task(stores.run_checkpoints(0.05))
        try:
            for i in range(4000):
                await store.batched(
                    lambda i=i: store.upsert(
                        RatingInput(f"u{i}", f"item-{i % 40}", 1 + i % 5, "x" * 400)
                    )
                )
            assert wal_bytes(wal) <= 4096 * (BACKSTOP_CHECKPOINT_PAGES + 100)
        finally:
            task.cancel()
            stores.close()

    async def test_the_wal_starts_over_without_a_checkpoint_on_the_loop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the writing connection's own checkpoint out of reach (it runs on the event
        loop and waits on two fsyncs), steady writes still see their WAL start over: the
        background task does it. The WAL then holds what was written between two restarts
        (up to 33 MB at this test's 300 MB a second), not everything written since the
        first write (160 MB here without the background restart)."""
        monkeypatch.setattr(store_module, "BACKSTOP_CHECKPOINT_PAGES", 10**6)
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        wal = f"{stores.path(TENANT)}-wal"
        task = asyncio.create_task(stores.run_checkpoints(0.05))
        try:
            for i in range(0, 6000, 4):
                await asyncio.gather(
                    *[
                        store.batched(
                            lambda n=n: store.upsert(
                                RatingInput(f"u{n}", f"item-{n % 40}", 1 + n % 5, "x" * 400)
                            )
                        )
                        for n in range(i, i + 4)
                    ]
                )
            assert wal_bytes(wal) <= 12 * WAL_LIMIT_BYTES
            assert store.score("item-0").count == 150
        finally:
            task.cancel()
            stores.close()

    async def test_writes_are_held_at_most_hold_seconds(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the WAL starts over, writes wait for the second checkpoint only so long:
        with that checkpoint taking 0.5 s (a slow disk's fsync), a write made meanwhile is
        answered within HOLD_SECONDS, and reads are never held."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        calls: list[Path] = []
        second_started = threading.Event()

        def slow_second_checkpoint(
            path: Path, busy_timeout_ms: int = 5000
        ) -> tuple[bool, int, int]:
            calls.append(path)
            if len(calls) == 2:
                second_started.set()
                time.sleep(0.5)
            return checkpoint(path, busy_timeout_ms)

        monkeypatch.setattr(store_module.sqlite, "checkpoint", slow_second_checkpoint)
        monkeypatch.setattr(store_module, "WAL_LIMIT_BYTES", -1)  # this small WAL is due
        restart = asyncio.create_task(stores._restart_wal(TENANT))
        assert await asyncio.to_thread(second_started.wait, 5)
        held_at = time.monotonic()
        _, created = await store.batched(lambda: store.upsert(RatingInput("u", "item", 4, None)))
        waited = time.monotonic() - held_at
        assert created
        assert store.score("item").count == 1
        assert 0.02 < waited < HOLD_SECONDS + 0.1  # held, but not for the whole checkpoint
        await restart
        stores.close()


class TestStoppingTheCheckpoints:
    async def test_a_cancel_as_a_batch_wakes_the_task_is_not_lost(self, tmp_path: Path) -> None:
        """The shutdown cancels the background task once and waits for it: a cancel arriving
        as a committed batch wakes it (asyncio.wait_for on Python 3.11 lost it) ends it."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        task = asyncio.create_task(stores.run_checkpoints(1.0))
        await asyncio.sleep(0.05)
        stores._wake.set()  # as after a batch that left the WAL past its limit
        await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert done == {task}
        assert task.cancelled()
        stores.close()


class TestCheckpointOfARemovedFile:
    def test_a_removed_file_is_not_made_again(self, tmp_path: Path) -> None:
        """A checkpoint on its way when the tenant's file is deleted fails instead of leaving
        an empty file behind, which would read as a tenant with no ratings; paths with URI
        characters are found as they are."""
        stores = TenantStores(tmp_path / "odd ?#% dir", node_id="n1")
        stores.get(TENANT).upsert(RatingInput("u", "item", 3, None))
        assert checkpoint(stores.path(TENANT))[0] is False  # not kept from running
        stores.drop(TENANT)
        with pytest.raises(sqlite3.OperationalError):
            checkpoint(stores.path(TENANT))
        assert not stores.path(TENANT).exists()
        stores.close()

    async def test_a_file_deleted_underneath_is_not_retried_every_round(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A tenant's file deleted by another process (the CLI) while the node has it open:
        its checkpoint fails once, is logged once, and is not tried again each round (a
        warning a second until the store was evicted)."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        store.upsert(RatingInput("u", "item", 3, None))
        path = stores.path(TENANT)
        delete_files(path)
        with caplog.at_level(logging.INFO, logger="edge_node.rating.store"):
            for _ in range(3):
                await stores._checkpoint_round()
        assert not store.dirty
        assert not path.exists()
        logged = [r for r in caplog.records if r.name == "edge_node.rating.store"]
        assert [r.levelno for r in logged] == [logging.INFO]
        assert "gone" in logged[0].getMessage()
        stores.close()
