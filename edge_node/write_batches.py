"""Group commit of one SQLite file's writes: the writes of one loop iteration share a transaction.

A tenant's rating file (edge_node.rating.tenant_store) and the API keys' credits
(edge_node.tenants.credits) are written this way on the event loop.

A write handed to `WriteBatches.run` joins the batch of its loop iteration; at the iteration's
end the batch runs in one transaction (one BEGIN/COMMIT, one set of WAL page writes), and
every caller learns its result, or its own error, only once that COMMIT has succeeded.

The writes run back to back, without a savepoint each (a savepoint costs a write two more
statements and a copy of every page it touches, about 5% of a rating write): a write that
fails before it changes a row (most failures: a data key that cannot be used, a rating not
the caller's) leaves nothing to undo. Should one fail after changing rows, the transaction
is undone and the batch written again with a savepoint per write, which undoes that write
alone. A write after which SQLite has ended the transaction itself (a full disk, an I/O
error) ends its batch: none of it is durable.

While another connection holds the file's write lock (another worker of `serve --workers N`
writing the same file, the sync process), the batch does not wait for it in SQLite's busy
handler, which sleeps on the event loop's thread and would stop every request of the worker
(up to a second at a time, measured with two workers writing one tenant). It asks for the
lock once; when it is taken, the batch goes back to the head of the queue and is attempted
again after a pause (RETRY_FIRST_SECONDS, doubling up to RETRY_MAX_SECONDS) while the loop
serves on, writes arriving meanwhile joining it. A write that has waited the connection's
busy timeout since it was queued fails with SQLITE_BUSY, as the busy handler's would have.

Writes can be held for a moment (`hold`, `release`): the background checkpoint does so to
start the WAL over without a checkpoint on the event loop (edge_node.rating.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from edge_node import sqlite

T = TypeVar("T")
RETRY_FIRST_SECONDS = 0.001  # the first pause after the write lock was found taken
RETRY_MAX_SECONDS = 0.005
# A queued write: what it does, the future its caller awaits, and when it was queued (loop
# time: how long it may still wait for the write lock).
Write = tuple[Callable[[], Any], "asyncio.Future[Any]", float]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _PartlyWritten(Exception):
    """A write of a batch run without savepoints failed after changing rows."""


class _LockTaken(Exception):
    """Another connection holds the file's write lock: the batch did not begin."""


class WriteBatches:
    """The batches of one connection's writes."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        begins: Callable[[], None] | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        """`begins` is called as each attempt at a batch opens its transaction, `committed`
        after a batch has committed."""
        self._conn = conn
        self._begins = begins
        self._committed = committed
        self._queued: list[Write] = []
        self._held = False
        self._close_after = False
        self.running = False  # a batch's write runs, in the batch's transaction
        # How long a write may wait for the write lock: the connection's busy timeout.
        self._lock_wait = conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
        self._pause = RETRY_FIRST_SECONDS  # before the next attempt, while the lock is taken
        self._retry: asyncio.TimerHandle | None = None  # that attempt, while one is due

    def close(self) -> None:
        """Close the connection once the writes queued have committed: at once when none
        are queued or they commit now (on the event loop, unless held), else once they have
        (a process stopping right after still commits them)."""
        if self._queued and not self._held and _on_a_loop():
            self._commit()
        if self._queued:
            self._close_after = True
        else:
            self._conn.close()

    def submit(self, operation: Callable[[], T]) -> asyncio.Future[T]:
        """Queue a write for the batch of this loop iteration; the future gives its result
        once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((operation, future, loop.time()))
        if len(self._queued) == 1 and not self._held:
            loop.call_soon(self._commit)
        return future

    async def run(self, operation: Callable[[], T]) -> T:
        """Run a write in the batch of this loop iteration; its result once committed."""
        return await self.submit(operation)

    def hold(self) -> None:
        """Let writes queue without running until `release`."""
        self._held = True

    def release(self) -> None:
        """Run the writes queued while held, in one batch (or at the attempt already due)."""
        self._held = False
        if self._queued and self._retry is None:
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        if self._retry is not None:  # this is the attempt that was due, or comes before it
            self._retry.cancel()
            self._retry = None
        if self._held or not self._queued:  # held since it was scheduled, or already run
            return
        batch, self._queued = self._queued, []
        try:
            self._run(batch)
        except _LockTaken as taken:
            self._lock_is_taken(batch, taken.__cause__ or taken)
        except BaseException as exc:  # a write raised past Exception: no caller waits for ever
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        else:
            self._pause = RETRY_FIRST_SECONDS
        finally:
            if self._close_after and not self._queued:
                self._conn.close()

    def _lock_is_taken(self, batch: list[Write], error: BaseException) -> None:
        """The batch found the write lock taken: its writes that have waited the busy timeout
        since they were queued fail with `error`; the others are attempted again after a
        pause, ahead of the writes queued meanwhile, which join them."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = []
        for write in batch:
            _, future, queued_at = write
            if future.done():
                continue
            if now - queued_at >= self._lock_wait:
                future.set_exception(error)
            else:
                waiting.append(write)
        if not waiting:
            self._pause = RETRY_FIRST_SECONDS
            return
        self._queued[:0] = waiting
        self._retry = loop.call_later(self._pause, self._commit)
        self._pause = min(2 * self._pause, RETRY_MAX_SECONDS)

    def _run(self, batch: list[Write]) -> None:
        """Write the batch and settle its futures."""
        outcomes: list[Outcome] = []
        try:
            try:
                self._write(batch, outcomes, savepoints=False)
            except _PartlyWritten:
                outcomes.clear()
                self._write(batch, outcomes, savepoints=True)
        except _LockTaken:
            raise
        except Exception as failure:  # BEGIN or COMMIT failed: none of the batch is durable
            # A write that hit a full disk or an I/O error may have ended the transaction
            # (SQLite rolls back by itself); its error, not COMMIT's, says why.
            cause: BaseException = next(
                (error for _, _, error in outcomes if error and sqlite.storage_failure(error)),
                failure,
            )
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(cause)
            return
        for future, value, error in outcomes:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        if self._committed is not None:
            self._committed()

    def _write(self, batch: list[Write], outcomes: list[Outcome], *, savepoints: bool) -> None:
        """Run the batch's writes in one transaction and commit it, each write's result or
        error added to `outcomes`. Without `savepoints`, a write failing after it changed
        rows raises _PartlyWritten (the transaction is rolled back). A write after which
        SQLite has ended the transaction itself ends the batch: no later write may run, and
        commit, in a transaction of its own. _LockTaken when another connection holds the
        write lock: nothing was written."""
        if self._begins is not None:
            self._begins()
        conn = self._conn
        began = False
        try:
            with sqlite.transaction(conn, wait=False):
                began = True
                self._write_each(batch, outcomes, savepoints=savepoints)
        except sqlite3.OperationalError as exc:
            if not began and sqlite.is_busy(exc):
                raise _LockTaken from exc
            raise

    def _write_each(self, batch: list[Write], outcomes: list[Outcome], *, savepoints: bool) -> None:
        """The batch's writes, in the open transaction (see `_write`)."""
        conn = self._conn
        for operation, future, _ in batch:
            if future.cancelled():
                continue
            # Rows a failed statement's triggers changed count too: at worst a second
            # attempt that was not needed, never a partial write missed.
            changes = conn.total_changes
            try:
                # A savepoint of the batch's transaction is the write's transaction.
                with sqlite.transaction(conn) if savepoints else contextlib.nullcontext():
                    self.running = True
                    outcomes.append((future, operation(), None))
            except Exception as exc:  # handed to that write's caller
                outcomes.append((future, None, exc))
                if not conn.in_transaction:
                    raise
                if not savepoints and conn.total_changes != changes:
                    raise _PartlyWritten from exc
            finally:
                self.running = False


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
