"""Where billing stands in each usage queue: what is planned, in which numbering, what may commit.

The positions are named values of node.sqlite, written in the transactions that plan (the
ledger's, sync/billing/ledger.py): `billing.planned_through.<queue>`, the last record planned;
`billing.planned_last.<queue>`, the fingerprint of that record; `billing.queue_epoch.<queue>`,
the queue's numbering, one more each time it restarts behind the ledger (docs/billing.md,
"Queue numberings"). The point billing may commit follows from them and the open batches.
"""

from __future__ import annotations

import sqlite3

from edge_node import sqlite
from edge_node.node_database import delete_value, read_value, write_value
from sync.billing.plan import PlannedRange

PLANNED_THROUGH = "billing.planned_through."
PLANNED_LAST = "billing.planned_last."  # fingerprint of the record planned_through names
QUEUE_EPOCH = "billing.queue_epoch."


class QueuePositions:
    """Billing's positions in the usage queues, on the ledger's connection to node.sqlite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def planned_through(self, queue: str) -> int:
        """The last queue record planned (0: none); records up to it are in the ledger."""
        mark = read_value(self._conn, PLANNED_THROUGH + queue)
        if mark is not None:
            return int(mark)
        # No mark (written with every plan): only a hand-edited database gets here.
        (ledger_max,) = self._conn.execute(
            "SELECT max(last_seq) FROM billing_ledger WHERE queue = ?", (queue,)
        ).fetchone()
        return int(ledger_max or 0)

    def mark_planned(self, planned: PlannedRange) -> None:
        """Mark a range planned, inside the transaction that writes its batches."""
        self._set_state(PLANNED_THROUGH + planned.queue, str(planned.last_seq))
        self._set_state(PLANNED_LAST + planned.queue, planned.last_fingerprint)

    def queue_epoch(self, queue: str) -> int:
        """The queue's numbering: 0, plus one for every restart of it behind the ledger."""
        return int(self._state(QUEUE_EPOCH + queue) or 0)

    def planned_fingerprint(self, queue: str) -> str | None:
        """The fingerprint of the last record planned (sync/billing/plan.py, record_fingerprint);
        None when the ledger predates fingerprints or nothing was planned."""
        return self._state(PLANNED_LAST + queue) or None

    def renumber(self, queue: str, planned_through: int) -> int:
        """The queue's numbering restarted: start a new epoch, in which records after
        `planned_through` are planned afresh (their identifiers name the epoch, so none
        repeats one of an earlier numbering); the new epoch."""
        with sqlite.transaction(self._conn):
            epoch = self.queue_epoch(queue) + 1
            self._set_state(QUEUE_EPOCH + queue, str(epoch))
            self._set_state(PLANNED_THROUGH + queue, str(planned_through))
            delete_value(self._conn, PLANNED_LAST + queue)
        return epoch

    def commit_point(self, queue: str) -> int:
        """The queue position billing may commit: just before the oldest range of the current
        numbering that still has a batch planned or sent; else everything planned. (Batches
        of an earlier numbering name records the queue no longer holds.)"""
        (oldest,) = self._conn.execute(
            "SELECT min(first_seq) FROM billing_ledger"
            " WHERE state IN ('planned', 'sent') AND queue = ? AND queue_epoch = ?",
            (queue, self.queue_epoch(queue)),
        ).fetchone()
        planned = self.planned_through(queue)
        return planned if oldest is None else min(planned, int(oldest) - 1)

    def _state(self, name: str) -> str | None:
        return read_value(self._conn, name)

    def _set_state(self, name: str, value: str) -> None:
        write_value(self._conn, name, value)
