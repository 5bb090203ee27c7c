"""Group commit of rating writes: writes arriving together share a transaction."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from pathlib import Path

import pytest

from edge_node import sqlite
from edge_node.rating.model import Rating, RatingInput
from edge_node.rating.store import TenantStores
from edge_node.rating.tenant_store import DeleteDenied, TenantStore

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"


def count_commits(store: TenantStore) -> list[str]:
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    return statements


class TestGroupCommit:
    async def test_concurrent_writes_share_one_commit(self, tmp_path: Path) -> None:
        """Twenty writes awaited together are committed by a single COMMIT, each with its result."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        statements = count_commits(store)
        results = await asyncio.gather(
            *[
                store.batched(
                    lambda i=i: store.upsert(RatingInput(f"u{i}", "item", 1 + i % 5, None))
                )
                for i in range(20)
            ]
        )
        assert [created for _, created in results] == [True] * 20
        assert statements.count("COMMIT") == 1
        assert statements.count("SAVEPOINT nested") == 0  # nothing failed: nothing to undo
        assert store.score("item").count == 20

    async def test_a_failing_write_is_undone_alone(self, tmp_path: Path) -> None:
        """A write that fails half-way is rolled back; the others in its batch commit, each
        once: the batch is undone and written again with a savepoint per write."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        statements = count_commits(store)

        def half_then_fail() -> None:
            store.upsert(RatingInput("doomed", "item", 5, None))
            raise RuntimeError("boom")

        first = store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        failing = store.batched(half_then_fail)
        last = store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        outcomes = await asyncio.gather(first, failing, last, return_exceptions=True)
        assert isinstance(outcomes[1], RuntimeError)
        assert [created for _, created in (outcomes[0], outcomes[2])] == [True, True]
        assert [r["user_id"] for r in store.page().ratings] == ["a", "b"]
        assert store.score("item").count == 2
        assert [row.user_id for row in store.pending_changes(10)[0]] == ["a", "b"]
        assert statements.count("ROLLBACK") == 1  # the first attempt, then a savepoint each
        assert statements.count("SAVEPOINT nested") == 3
        assert statements.count("COMMIT") == 1

    async def test_a_write_failing_before_any_change_costs_no_second_attempt(
        self, tmp_path: Path
    ) -> None:
        """A write refused before it changed a row (a rating of another user's) leaves
        nothing to undo: the batch commits in its one attempt, without savepoints."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        rating, _ = store.upsert(RatingInput("owner", "item", 3, None))
        statements = count_commits(store)
        first = store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        refused = store.batched(lambda: store.delete(rating.id, only_user="someone-else"))
        last = store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        outcomes = await asyncio.gather(first, refused, last, return_exceptions=True)
        assert isinstance(outcomes[1], DeleteDenied)
        assert store.score("item").count == 3
        assert (statements.count("BEGIN IMMEDIATE"), statements.count("COMMIT")) == (1, 1)
        assert statements.count("SAVEPOINT nested") == statements.count("ROLLBACK") == 0

    async def test_a_transaction_sqlite_ended_ends_its_batch(self, tmp_path: Path) -> None:
        """A write after which the batch's transaction is gone (SQLite rolls it back itself
        on a full disk or an I/O error) fails the whole batch: a later write must not run,
        and commit, in a transaction of its own while its caller is told it failed."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        ran: list[str] = []

        def write(user: str) -> tuple[Rating, bool]:
            ran.append(user)
            return store.upsert(RatingInput(user, "item", 3, None))

        def transaction_lost() -> None:
            store._conn.execute("ROLLBACK")  # as SQLite does after SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")

        first = store.batched(lambda: write("a"))
        lost = store.batched(transaction_lost)
        last = store.batched(lambda: write("b"))
        outcomes = await asyncio.gather(first, lost, last, return_exceptions=True)
        assert all(isinstance(outcome, sqlite3.OperationalError) for outcome in outcomes)
        assert ran == ["a"]
        assert store.score("item").count == 0
        assert not store._conn.in_transaction

    async def test_results_arrive_only_after_the_commit(self, tmp_path: Path) -> None:
        """No caller sees its result before the shared transaction is committed."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        seen_in_transaction: list[bool] = []

        async def write(user: str) -> None:
            await store.batched(lambda: store.upsert(RatingInput(user, "item", 3, None)))
            seen_in_transaction.append(store._conn.in_transaction)

        await asyncio.gather(write("a"), write("b"), write("c"))
        assert seen_in_transaction == [False, False, False]

    async def test_an_evicted_store_closes_after_its_pending_writes(self, tmp_path: Path) -> None:
        """Evicting a tenant file with writes pending lets them commit before it is closed."""
        stores = TenantStores(tmp_path, node_id="n", max_open=1)
        store = stores.get(TENANT)
        pending = asyncio.create_task(
            store.batched(lambda: store.upsert(RatingInput("a", "item", 3, None)))
        )
        await asyncio.sleep(0)  # the write is queued, its commit not yet run
        stores.get("0b6f2a4e-1b2c-4d5e-8f90-123456789abc")  # evicts TENANT's store
        rating, created = await pending
        assert created
        with pytest.raises(Exception, match="closed"):
            store.page()
        assert stores.get(TENANT).page().ratings == [rating.to_json()]


class TestPendingListingInABatch:
    async def test_a_batch_looks_at_the_outbox_once(self, tmp_path: Path) -> None:
        """Twenty writes of one batch ask once whether the outbox is empty; the tenant is listed."""
        stores = TenantStores(tmp_path, node_id="n")
        store = stores.get(TENANT)
        statements = count_commits(store)
        await asyncio.gather(
            *[
                store.batched(lambda i=i: store.upsert(RatingInput(f"u{i}", "item", 3, None)))
                for i in range(20)
            ]
        )
        assert statements.count("SELECT EXISTS (SELECT 1 FROM outbox)") == 1
        assert stores.pending_tenants() == [TENANT]

    async def test_a_rolled_back_write_leaves_its_batch_listed(self, tmp_path: Path) -> None:
        """The write that looked at the empty outbox is rolled back; the batch's next write,
        which does not look again, still has its tenant listed for upload."""
        stores = TenantStores(tmp_path, node_id="n")
        store = stores.get(TENANT)

        def write_then_fail() -> None:
            store.upsert(RatingInput("doomed", "item", 5, None))
            raise RuntimeError("boom")

        failing = store.batched(write_then_fail)
        kept = store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        outcomes = await asyncio.gather(failing, kept, return_exceptions=True)
        assert isinstance(outcomes[0], RuntimeError)
        assert stores.pending_tenants() == [TENANT]
        assert [change.user_id for change in store.pending_changes(10)[0]] == ["b"]

    async def test_every_batch_and_lone_write_looks_again(self, tmp_path: Path) -> None:
        """Once the outbox is uploaded and the tenant unlisted, the next batch lists it again,
        and so does a write outside any batch."""
        stores = TenantStores(tmp_path, node_id="n")
        store = stores.get(TENANT)
        writes = (
            lambda: store.batched(lambda: store.upsert(RatingInput("a", "item", 1, None))),
            lambda: store.batched(lambda: store.upsert(RatingInput("b", "item", 2, None))),
        )
        for write in writes:
            await write()
            assert stores.pending_tenants() == [TENANT]
            store.acknowledge_uploaded(store.pending_changes(10)[1])
            assert stores.pending_tenants() == []
        store.upsert(RatingInput("c", "item", 3, None))
        assert stores.pending_tenants() == [TENANT]


def open_temporary_files() -> list[str]:
    """The files SQLite made for temporary data that this process holds open (it unlinks
    them at once, so only /proc still names them)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if "etilqs_" in (target := os.readlink(f"/proc/self/fd/{fd}")):
                found.append(target)
    return found


class _Abort(BaseException):
    """Raised past `except Exception`, as a KeyboardInterrupt would be."""


class TestBatchBaseException:
    async def test_every_caller_hears_of_a_write_raising_past_exception(
        self, tmp_path: Path
    ) -> None:
        """A write raising something no `except Exception` catches rolls the batch back and
        answers every caller with it, the writes that had run included: none waits for ever."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)

        def abort() -> None:
            raise _Abort

        first = store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        aborting = store.batched(abort)
        last = store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, aborting, last, return_exceptions=True), 2
        )
        assert all(isinstance(outcome, _Abort) for outcome in outcomes)
        assert store.score("item").count == 0


class TestBatchJournal:
    async def test_savepoints_of_a_large_batch_write_no_temporary_file(
        self, tmp_path: Path
    ) -> None:
        """A batch written again with a savepoint per write (one of its writes failed after
        changing a row) keeps the savepoints' journal in memory: sixty commented writes spilled
        it to a temporary file, and each later write of the batch wrote its pages there."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        statements = count_commits(store)
        seen: list[str] = []

        def write(number: int) -> tuple[Rating, bool]:
            written = store.upsert(
                RatingInput(f"user-{number:04d}", f"item-{number % 7}", 1 + number % 5, "x" * 200)
            )
            seen.extend(open_temporary_files())
            return written

        def half_then_fail() -> None:
            store.upsert(RatingInput("doomed", "item-0", 5, None))
            raise RuntimeError("boom")

        batches = [[batch * 100 + i for i in range(60)] for batch in range(3)]
        for numbers in batches:
            failing = asyncio.ensure_future(store.batched(half_then_fail))
            await asyncio.gather(*[store.batched(lambda n=n: write(n)) for n in numbers])
            with pytest.raises(RuntimeError):
                await failing
        assert statements.count("SAVEPOINT nested") == 3 * 61
        assert store.score("item-0").count == sum(n % 7 == 0 for b in batches for n in b)
        assert seen == []


class TestWriteLockTakenElsewhere:
    """Another connection (another worker, the sync process) holding the tenant file's write
    lock: the batch waits for it off the event loop, never in SQLite's busy handler."""

    @staticmethod
    def holder(store: TenantStore, tmp_path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / f"{TENANT}.sqlite", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    async def test_the_loop_runs_while_the_lock_is_taken_and_the_batch_commits_after(
        self, tmp_path: Path
    ) -> None:
        """The batch finds the lock taken and is attempted again while the loop goes on; the
        writes that arrive meanwhile join it, and all commit together once the lock is
        free. In the busy handler the loop would stop here for the busy timeout (3 s), and
        the write would fail with "database is locked" before this test's sleep ended."""
        store = TenantStores(tmp_path, node_id="n", busy_timeout_ms=3000).get(TENANT)
        holder = self.holder(store, tmp_path)
        statements = count_commits(store)
        first = asyncio.ensure_future(
            store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        )
        await asyncio.sleep(0.05)
        assert not first.done()
        later = asyncio.ensure_future(
            store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        )
        await asyncio.sleep(0.02)
        assert statements.count("BEGIN IMMEDIATE") >= 2  # asked again, not waited for
        holder.execute("COMMIT")
        assert [created for _, created in await asyncio.gather(first, later)] == [True, True]
        assert statements.count("COMMIT") == 1
        assert store.score("item").count == 2

    async def test_a_batch_fails_once_the_lock_stays_taken_for_the_busy_timeout(
        self, tmp_path: Path
    ) -> None:
        """Past the connection's busy timeout the batch fails with SQLITE_BUSY, as the busy
        handler's would, and the loop ran all the while; the next write, once the lock is
        free, commits."""
        store = TenantStores(tmp_path, node_id="n", busy_timeout_ms=200).get(TENANT)
        holder = self.holder(store, tmp_path)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticking = asyncio.ensure_future(tick())
        try:
            with pytest.raises(sqlite3.OperationalError) as raised:
                await store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        finally:
            ticking.cancel()
        assert sqlite.is_busy(raised.value)
        assert sqlite.storage_failure(raised.value) == (
            "the file is locked by another process",
            False,
        )
        assert ticks >= 5  # about 40 in 200 ms; none while a busy handler sleeps
        holder.execute("ROLLBACK")
        _, created = await store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        assert created
        assert store.score("item").count == 1

    async def test_each_write_waits_the_busy_timeout_from_when_it_was_queued(
        self, tmp_path: Path
    ) -> None:
        """A write that joins a batch already waiting for the lock gets a wait of its own: the
        first fails once it has waited the busy timeout (400 ms), the later one, queued
        250 ms on, is still waiting then and commits once the lock is free."""
        store = TenantStores(tmp_path, node_id="n", busy_timeout_ms=400).get(TENANT)
        holder = self.holder(store, tmp_path)
        first = asyncio.ensure_future(
            store.batched(lambda: store.upsert(RatingInput("a", "item", 2, None)))
        )
        await asyncio.sleep(0.25)
        later = asyncio.ensure_future(
            store.batched(lambda: store.upsert(RatingInput("b", "item", 4, None)))
        )
        with pytest.raises(sqlite3.OperationalError):
            await first
        assert not later.done()
        holder.execute("ROLLBACK")
        _, created = await later
        assert created
        assert [r["user_id"] for r in store.page().ratings] == ["b"]

    async def test_a_second_wait_for_the_lock_is_a_whole_one(self, tmp_path: Path) -> None:
        """After a batch that waited for the lock has committed, the next one to find it
        taken waits again from the start, for as long as the lock is held (within the busy
        timeout), and is attempted a few times a few milliseconds apart meanwhile: a hold and
        release of the writes (a WAL restart's) does not start a second round of attempts."""
        store = TenantStores(tmp_path, node_id="n", busy_timeout_ms=1000).get(TENANT)
        statements = count_commits(store)
        for user in ("a", "b"):
            holder = self.holder(store, tmp_path)
            write = asyncio.ensure_future(
                store.batched(functools.partial(store.upsert, RatingInput(user, "item", 2, None)))
            )
            attempts = statements.count("BEGIN IMMEDIATE")
            for _ in range(5):
                await asyncio.sleep(0.02)
                store.batches.hold()
                store.batches.release()
            assert not write.done()
            # One round of attempts: at most one every 5 ms after the first few, about 20 in
            # 100 ms (each hold and release starting another round doubled that and more).
            assert statements.count("BEGIN IMMEDIATE") - attempts <= 40
            holder.execute("COMMIT")
            holder.close()
            await write
        assert store.score("item").count == 2
