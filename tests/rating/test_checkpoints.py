"""Background checkpoints: written tenant files reach their main database file off the loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

from edge_node.rating.model import RatingInput
from edge_node.rating.store import WAL_LIMIT_BYTES, TenantStores
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
        writer and the WAL would never be restarted: the writer's own checkpoint past
        BACKSTOP_CHECKPOINT_PAGES lets the next write restart it, so it stays near
        WAL_LIMIT_BYTES instead of growing with the load (88 MB here without it)."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(TENANT)
        wal = f"{stores.path(TENANT)}-wal"
        task = asyncio.create_task(stores.run_checkpoints(0.05))
        try:
            for i in range(4000):
                store.upsert(RatingInput(f"u{i}", f"item-{i % 40}", 1 + i % 5, "x" * 400))
                await asyncio.sleep(0)
            assert wal_bytes(wal) <= 2 * WAL_LIMIT_BYTES
        finally:
            task.cancel()
            stores.close()
