"""Per-tenant SQLite storage of ratings: one file per tenant under data_dir/tenants/.

`TenantStores` opens a tenant's file on first use (migrated, its plain-text comments of
before encryption sealed), keeps the most recently used ones open, and checkpoints their
WALs in the background. One file is a `TenantStore` (edge_node.rating.tenant_store: writes
and reads) with its replicated side (edge_node.rating.replication: the outbox and downloaded
rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_node import sqlite
from edge_node.rating.pending import FILE_NAME as PENDING_FILE
from edge_node.rating.pending import PendingUploads
from edge_node.rating.schema import MIGRATIONS
from edge_node.rating.tenant_store import TenantStore

if TYPE_CHECKING:
    from edge_node.crypto.keystore import Keyring


log = logging.getLogger(__name__)
# Checkpoints run in a background thread (run_checkpoints), whose fsyncs never hold up the
# event loop. Under steady writes that PASSIVE checkpoint never catches up with the writer, and
# a WAL starts over only when a write begins with every frame of it copied: once a batch of
# writes leaves the WAL past WAL_LIMIT_BYTES, the background task copies it while writes go on,
# holds this process's batched writes to the file (at most HOLD_SECONDS) while a last
# checkpoint copies what they added, and releases them; the first write after starts the WAL
# over, and `journal_size_limit` cuts the file back to WAL_LIMIT_BYTES. Reads go on meanwhile.
# Should that not happen (another process writing or reading the file, as the workers of
# `serve --workers N` do, a checkpoint failing), past BACKSTOP_CHECKPOINT_PAGES the writing
# connection checkpoints itself after a commit (SQLite's autocheckpoint), on the event loop.
BACKSTOP_CHECKPOINT_PAGES = 4000
HOLD_SECONDS = 0.05
CATCH_UP_PASSES = 4  # checkpoints while writes go on, until one copies few frames
CAUGHT_UP_FRAMES = 128  # few enough for the last checkpoint to copy while writes are held
RESTART_SPACING_SECONDS = 0.05  # between rounds of WAL restarts: writes are held at most 50%
# A WAL file keeps the size it grew to until a write restarts it; on a full disk, below the
# free-space floor, no write comes: the background round cuts an idle file's WAL past this
# size with a TRUNCATE checkpoint that never waits, which gives the space back.
WAL_LIMIT_BYTES = 4 << 20


class TenantStores:
    """Opens tenant files on demand and keeps the most recently used ones open."""

    def __init__(
        self,
        directory: Path,
        *,
        node_id: str,
        synchronous: sqlite.Synchronous = "normal",
        max_open: int = 256,
        busy_timeout_ms: int = 5000,
        keyring: Keyring | None = None,
    ) -> None:
        """`keyring` holds the tenants' data keys; None: the default one beside `directory`
        (data_dir/keys, with its generated master key), opened on first use."""
        if keyring is None:
            from edge_node.crypto.keystore import KEYS_DIRECTORY, Keyring  # noqa: PLC0415

            keyring = Keyring(directory.parent / KEYS_DIRECTORY, busy_timeout_ms=busy_timeout_ms)
        self.keyring = keyring
        self.directory = directory
        self.node_id = node_id
        self._synchronous = synchronous
        self._max_open = max_open
        self._busy_timeout_ms = busy_timeout_ms
        self._open: OrderedDict[str, TenantStore] = OrderedDict()
        # Tenants whose file failed to open as damaged, and why: reported by /readyz.
        self.damaged: dict[str, str] = {}
        self._restarts_due: set[str] = set()  # tenants whose WAL is to start over
        self._wake = asyncio.Event()  # wakes run_checkpoints for them
        directory.mkdir(parents=True, exist_ok=True)
        self.pending = PendingUploads(directory / PENDING_FILE, busy_timeout_ms=busy_timeout_ms)
        if not self.pending.complete:  # first start with the index: look at every file once
            self.pending.rebuild(directory)

    def path(self, tenant_id: str) -> Path:
        # tenant_id is a canonical UUID by the time it gets here (the router checks), so it
        # cannot name a path outside the directory.
        return self.directory / f"{tenant_id}.sqlite"

    def get(self, tenant_id: str) -> TenantStore:
        store = self._open.get(tenant_id)
        if store is not None:
            self._open.move_to_end(tenant_id)
            return store
        path = self.path(tenant_id)
        new = not path.exists()
        try:
            conn = sqlite.connect(
                path, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms
            )
        except BaseException as exc:
            if new:
                self._remove_files(path)
            self._note_damage(tenant_id, exc)
            raise
        try:  # a file that cannot be migrated (a full disk) is closed, not left open
            sqlite.migrate(conn, MIGRATIONS)
            # Checkpoints run in the background (run_checkpoints); this threshold is a backstop
            # for when they cannot keep up with steady writes (BACKSTOP_CHECKPOINT_PAGES).
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            # A batch written with a savepoint per write (edge_node.write_batches, after
            # a write failed half-way) keeps their journal, which SQLite spills to a temporary
            # file past 64 KiB: a batch of a few dozen writes did, and its later writes then
            # wrote their pages there too (about five more writes a rating). In memory it lasts
            # as long as the batch. Set after the migrations, whose sorts may be as large as a
            # table.
            conn.execute("PRAGMA temp_store = MEMORY")
            store = TenantStore(
                conn,
                tenant_id,
                self.node_id,
                self.keyring.sealer(tenant_id),
                self.pending,
                committed=functools.partial(self._check_wal, tenant_id),
            )
            store.seal_plaintext_comments()
        except BaseException as exc:
            conn.close()
            if new:  # never a half-made file that readers would take for a tenant's
                self._remove_files(path)
            self._note_damage(tenant_id, exc)
            raise
        self.damaged.pop(tenant_id, None)
        self._open[tenant_id] = store
        if len(self._open) > self._max_open:
            _, evicted = self._open.popitem(last=False)
            evicted.close()
        return store

    def close(self) -> None:
        while self._open:
            _, store = self._open.popitem()
            store.close()
        self.keyring.close()
        self.pending.close()

    def drop(self, tenant_id: str) -> bool:
        """Close the tenant's file and delete it (with its WAL); False when there was none."""
        store = self._open.pop(tenant_id, None)
        if store is not None:
            store.close()
        path = self.path(tenant_id)
        existed = path.exists()
        self._remove_files(path)
        self.pending.unmark(tenant_id)
        return existed

    def _note_damage(self, tenant_id: str, exc: BaseException) -> None:
        fault = sqlite.storage_failure(exc)
        if fault is not None and fault[1] and tenant_id not in self.damaged:
            self.damaged[tenant_id] = str(exc)
            log.error("tenant %s: its file %s is damaged: %s", tenant_id, self.path(tenant_id), exc)

    @staticmethod
    def _remove_files(path: Path) -> None:
        """A tenant's file with its WAL and shared-memory files."""
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)

    def open_tenant_ids(self) -> list[str]:
        """The tenants whose files are open now, least recently used first."""
        return list(self._open)

    def pending_tenants(self) -> list[str]:
        """The tenants that may have ratings waiting for upload (every one that has)."""
        return self.pending.tenants()

    async def run_checkpoints(self, interval: float) -> None:
        """Checkpoint every tenant file written since the last round, off the event loop; a
        file not written again meanwhile whose WAL outgrew WAL_LIMIT_BYTES has it cut back.
        Between rounds, start over the WAL of files written steadily (_restart_wal)."""
        loop = asyncio.get_running_loop()
        next_round = loop.time() + interval
        while True:
            # Not asyncio.wait_for: on Python 3.11 it can lose a cancellation that arrives as
            # the wait ends, and the shutdown that cancels this task would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_round):
                    await self._wake.wait()
            self._wake.clear()
            if self._restarts_due:
                for tenant_id in sorted(self._restarts_due):
                    await self._restart_wal(tenant_id)
                    self._restarts_due.discard(tenant_id)
                await asyncio.sleep(RESTART_SPACING_SECONDS)
            if loop.time() >= next_round:
                await self._checkpoint_round()
                next_round = loop.time() + interval

    async def _checkpoint_round(self) -> None:
        written = [store for store in self._open.values() if store.dirty]
        for store in written:
            store.dirty = False
        for store in written:
            path = self.path(store.tenant_id)
            try:
                busy, _, _ = await asyncio.to_thread(sqlite.checkpoint, path, self._busy_timeout_ms)
                if busy:  # another connection's checkpoint runs: next round
                    store.dirty = True
                elif not store.dirty:  # idle since the round began (a write arriving now waits)
                    cut = await asyncio.to_thread(sqlite.cut_wal, path, WAL_LIMIT_BYTES)
                    store.dirty = store.dirty or not cut  # tried again next round
            except sqlite3.Error as exc:
                if not path.exists():  # deleted underneath (by the CLI): nothing to copy to
                    log.info("tenant %s's file is gone: its checkpoint is dropped", store.tenant_id)
                    continue
                store.dirty = True
                log.warning("checkpoint of tenant %s failed: %s", store.tenant_id, exc)

    def _check_wal(self, tenant_id: str) -> None:
        """After a batch of writes committed: a WAL grown past WAL_LIMIT_BYTES is to start
        over (one stat per batch; a stat that fails is the backstop's to make up for)."""
        if tenant_id in self._restarts_due:
            return
        try:
            grown = sqlite.wal_bytes(self.path(tenant_id)) > WAL_LIMIT_BYTES
        except OSError:
            return
        if grown:
            self._restarts_due.add(tenant_id)
            self._wake.set()

    async def _restart_wal(self, tenant_id: str) -> None:
        """Copy the tenant's WAL into its file while writes go on (again, while a pass still
        had much to copy), then hold this process's writes to it while a last checkpoint
        copies the frames they added, so that the first write released finds every frame
        copied and starts the WAL over: no checkpoint on the event loop. Should another
        connection write or read the file meanwhile, the WAL may not start over: the next
        batch asks again, and the backstop remains."""
        store = self._open.get(tenant_id)
        path = self.path(tenant_id)
        if store is None or sqlite.wal_bytes(path) <= WAL_LIMIT_BYTES:  # started over since
            return
        try:
            copied_before = 0
            for _ in range(CATCH_UP_PASSES):
                busy, _, copied = await asyncio.to_thread(
                    sqlite.checkpoint, path, self._busy_timeout_ms
                )
                if busy or self._open.get(tenant_id) is not store:  # closed or dropped meanwhile
                    return
                caught_up = copied - copied_before <= CAUGHT_UP_FRAMES
                copied_before = copied
                if caught_up:
                    break
            store.batches.hold()
            final = asyncio.ensure_future(
                asyncio.to_thread(sqlite.checkpoint, path, self._busy_timeout_ms)
            )
            try:
                await asyncio.wait({final}, timeout=HOLD_SECONDS)
            finally:
                store.batches.release()
                final.add_done_callback(_retrieved)  # its error is logged below, or dropped
            await final
        except (sqlite3.Error, OSError) as exc:
            log.warning("checkpoint of tenant %s failed: %s", tenant_id, exc)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen (a shutdown may leave no one to await it)."""
    if not future.cancelled():
        future.exception()
