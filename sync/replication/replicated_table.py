"""One replicated table as a sync round moves it: this node's rows up, the change feed down.

A round (rounds.py) moves every table of its list the same way, up before down:

- Up: this node's pending rows of the shard's tenants, each batch one central transaction,
  acknowledged here only once its COMMIT returned. A table with `set_aside_as` goes up
  `batch_size` rows at a time, and a batch refused for good is bisected so that only the rows
  refused alone are set aside (set_aside.py). Key material has none: all of it goes up in one
  transaction, and a refusal fails the round.
- Down: the table's change feed (change_feed.py) from its checkpoint, page by page. The rows
  of the shard's tenants are applied, then the page's checkpoint is stored: in the same local
  transaction where the edge side can, after it otherwise (applying a row twice is harmless,
  skipping one is not). A page without rows stores nothing: not worth a write and an fsync.

A table is described by the functions of this node's storage it uses, bound to one
EdgeStorage (registry.py, billing_events.py and data_keys.py build theirs for each round).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from sync.replication.change_feed import ChangeFeed

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.change_feed import FeedRow

Row = TypeVar("Row")
Checkpoint = tuple[str, str]  # (name, encoded position)


@dataclass(frozen=True)
class Upload(Generic[Row]):
    """A table's way up (see the module doc)."""

    pending: Callable[[], Sequence[Row]]  # this node's rows waiting, oldest first
    tenant: Callable[[Row], str]  # whose row it is: the shard it goes to
    send: Callable[[Connection, Sequence[Row]], Awaitable[int]]  # one transaction; rows changed
    acknowledge: Callable[[Sequence[Row]], None]  # after the COMMIT: no longer pending
    set_aside_as: str | None = None  # the `kind` of its refused rows in sync-set-aside.jsonl

    def batches(self, rows: Sequence[Row], batch_size: int) -> list[Sequence[Row]]:
        """The transactions `rows` go up in."""
        if self.set_aside_as is None:
            return [rows] if rows else []
        return [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]


@dataclass(frozen=True)
class ReplicatedTable(Generic[Row]):
    """One table replicated between this node and the central database (see the module doc).

    Its checkpoint on shard n is named `<name>.shard-<n>`, read by `read_checkpoint`;
    `apply` applies a page's rows of the shard's tenants and stores the checkpoint, and says
    how many rows changed here. `apply_waiting` applies, before anything moves, rows
    downloaded earlier that waited for another table's (billing events for their tenant).
    `reported`: its rows count in the round's report. `enabled`: it moves at all this round.
    """

    name: str
    feed: ChangeFeed
    read_checkpoint: Callable[[str], str | None]
    apply: Callable[[list[FeedRow], Checkpoint], int]
    upload: Upload[Row] | None = None
    apply_waiting: Callable[[], int] | None = None
    reported: bool = True
    enabled: bool = True
