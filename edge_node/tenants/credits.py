"""API-key credits: how many units a key may still spend, in `data_dir/credits.sqlite`.

A key made with `keys create --credits N [--refill M --refill-every PERIOD]` carries its grant
in node.sqlite (`api_keys.credits`, `refill`, `refill_every`: what the key is); what it has
left lives here, in a file of its own, because it changes with every request through the key:
written in node.sqlite, each spend would make every worker's registry view read the whole
registry again (edge_node.tenants.view follows that file's changes).

A spend reads and writes the key's row under the file's write lock (every worker process of
the node spends from the same row, one at a time), so however many workers serve a key, no
more is served than it holds. On the event loop the spends of one loop iteration share one
transaction and its one fsync (`spend_batched`, edge_node.write_batches), each request
answered once the commit holding its spend is durable; another worker holding the lock is
waited for without stopping the loop. A key's row is made on its first spend, from its
grant. With a refill, the balance is set back to M (not added to) at each PERIOD counted
from the key's first spend; units given back (`refund`: a request that billed less than it
held) go back only into the refill interval they were taken from. The file is written with
`synchronous=FULL`, like node.sqlite: a credit spent and answered is never spent again after
a power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from edge_node import sqlite
from edge_node.tenants.model import KeyCredits
from edge_node.write_batches import WriteBatches

log = logging.getLogger(__name__)

FILE_NAME = "credits.sqlite"
MIGRATIONS = (
    """
    CREATE TABLE key_credits (
        key_id TEXT PRIMARY KEY,
        remaining INTEGER NOT NULL CHECK (remaining >= 0),
        refilled_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)


class CreditDecision(NamedTuple):
    """A key's answer to one request: whether its units were taken, and what is left."""

    allowed: bool
    remaining: int
    reset_seconds: int | None  # until the next refill; None: the key is never refilled
    refilled_at: int  # ms: the refill interval the units were taken from
    limit: int  # what the key holds when full: its refill, else its first grant
    window_seconds: int  # its refill interval; 0: never refilled


class CreditStore:
    """The credits file of the node, open for spending and reading."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        sqlite.migrate(conn, MIGRATIONS)
        self._conn = conn
        self._batches = WriteBatches(conn)

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout_ms: int = 5000) -> CreditStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite.connect(
            data_dir / FILE_NAME, synchronous="full", busy_timeout_ms=busy_timeout_ms
        )
        try:
            return cls(conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the file, or once the spends queued for its batch have committed."""
        self._batches.close()

    async def spend_batched(
        self, key_id: str, grant: KeyCredits, units: int, now_ms: int
    ) -> CreditDecision:
        """`spend` in the transaction of this loop iteration's spends; its decision once that
        transaction is durable. A caller cancelled after its spend became durable (it will
        serve nothing) gives the units back."""
        spending = self._batches.submit(functools.partial(self.spend, key_id, grant, units, now_ms))
        try:
            return await spending
        except asyncio.CancelledError:
            if spending.done() and not spending.cancelled() and spending.exception() is None:
                decision = spending.result()
                if decision.allowed:
                    self.refund_later(key_id, units, decision.refilled_at)
            raise

    def refund_later(self, key_id: str, units: int, refilled_at: int) -> None:
        """`refund` in the transaction of this loop iteration's writes, not waited for; one
        that cannot be written is logged, and the credits stay spent."""
        refund = self._batches.submit(functools.partial(self.refund, key_id, units, refilled_at))
        refund.add_done_callback(functools.partial(_refunded, key_id, units))

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write's transaction: its own, or within a batch the batch's."""
        if self._batches.running:
            return contextlib.nullcontext(self._conn)
        return sqlite.transaction(self._conn)

    def spend(self, key_id: str, grant: KeyCredits, units: int, now_ms: int) -> CreditDecision:
        """Take `units` from the key if it has that many left (after any refill due)."""
        with self._write():
            remaining, refilled_at = self._current(key_id, grant, now_ms)
            allowed = remaining >= units
            if allowed:
                remaining -= units
            self._conn.execute(
                "INSERT INTO key_credits (key_id, remaining, refilled_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET remaining = excluded.remaining,"
                " refilled_at = excluded.refilled_at",
                (key_id, remaining, refilled_at),
            )
        return _decision(allowed, remaining, grant, refilled_at, now_ms)

    def refund(self, key_id: str, units: int, refilled_at: int) -> None:
        """Give back units taken from the refill interval starting at `refilled_at`; none go
        back into a later interval (a refill has set the balance anew)."""
        with self._write():
            self._conn.execute(
                "UPDATE key_credits SET remaining = remaining + ?"
                " WHERE key_id = ? AND refilled_at = ?",
                (units, key_id, refilled_at),
            )

    def balance(self, key_id: str, grant: KeyCredits, now_ms: int) -> CreditDecision:
        """What the key has left now, without spending (for `keys list`)."""
        remaining, refilled_at = self._current(key_id, grant, now_ms)
        return _decision(True, remaining, grant, refilled_at, now_ms)

    def _current(self, key_id: str, grant: KeyCredits, now_ms: int) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT remaining, refilled_at FROM key_credits WHERE key_id = ?", (key_id,)
        ).fetchone()
        remaining, refilled_at = (grant.credits, now_ms) if row is None else row
        every_ms = grant.refill_every_seconds * 1000
        if every_ms and now_ms >= refilled_at + every_ms:
            refilled_at += (now_ms - refilled_at) // every_ms * every_ms
            remaining = grant.refill
        return int(remaining), int(refilled_at)


def _decision(
    allowed: bool, remaining: int, grant: KeyCredits, refilled_at: int, now_ms: int
) -> CreditDecision:
    every = grant.refill_every_seconds
    if not every:
        return CreditDecision(allowed, remaining, None, refilled_at, grant.credits, 0)
    reset = max(1, math.ceil((refilled_at + every * 1000 - now_ms) / 1000))
    return CreditDecision(allowed, remaining, reset, refilled_at, grant.refill, every)


def _refunded(key_id: str, units: int, refund: asyncio.Future[None]) -> None:
    if not refund.cancelled() and (error := refund.exception()) is not None:
        log.error("%d credits of key %s not given back: %s", units, key_id, error)
