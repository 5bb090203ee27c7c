"""Group commit of a tenant file's writes: the writes of one loop iteration share a transaction.

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
Write = tuple[Callable[[], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _PartlyWritten(Exception):
    """A write of a batch run without savepoints failed after changing rows."""


class WriteBatches:
    """The batches of one connection's writes."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        begins: Callable[[], None],
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

    def close(self) -> None:
        """Close the connection, at once or, with writes queued, once they have committed."""
        if self._queued:
            self._close_after = True
        else:
            self._conn.close()

    async def run(self, operation: Callable[[], T]) -> T:
        """Run a write in the batch of this loop iteration; its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((operation, future))
        if len(self._queued) == 1 and not self._held:
            asyncio.get_running_loop().call_soon(self._commit)
        return await future

    def hold(self) -> None:
        """Let writes queue without running until `release`."""
        self._held = True

    def release(self) -> None:
        """Run the writes queued while held, in one batch."""
        self._held = False
        if self._queued:
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        if self._held or not self._queued:  # held since it was scheduled, or already run
            return
        batch, self._queued = self._queued, []
        try:
            self._run(batch)
        except BaseException as exc:  # a write raised past Exception: no caller waits for ever
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            if self._close_after:
                self._conn.close()

    def _run(self, batch: list[Write]) -> None:
        """Write the batch and settle its futures."""
        outcomes: list[Outcome] = []
        try:
            try:
                self._write(batch, outcomes, savepoints=False)
            except _PartlyWritten:
                outcomes.clear()
                self._write(batch, outcomes, savepoints=True)
        except Exception as failure:  # BEGIN or COMMIT failed: none of the batch is durable
            # A write that hit a full disk or an I/O error may have ended the transaction
            # (SQLite rolls back by itself); its error, not COMMIT's, says why.
            cause: BaseException = next(
                (error for _, _, error in outcomes if error and sqlite.storage_failure(error)),
                failure,
            )
            for _, future in batch:
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
        commit, in a transaction of its own."""
        self._begins()
        conn = self._conn
        with sqlite.transaction(conn):
            for operation, future in batch:
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
