"""Planning: usage records read from the queue become meter-event batches per tenant and window.

The planner keeps the records read but not yet planned, in queue order, and hands out
contiguous queue ranges ending where a time window is complete, so each tenant's window
becomes one batch (one Stripe call) rather than a few. A window is complete when a record
of a later window follows it in the queue, or when everything durable has been read and the
clock is past the window's end (plus a grace for a group commit still in flight), or is
before the window's start: the clock stepped back, so no record of that window can be
served until it gets there again, and waiting would hold the usage for as long as the step.
A record that arrives later for a window already planned (the clock stepped back, or a very
slow fsync) simply becomes a batch of its own in a later range: billed once, one call more.

Each batch's identifier, which is also its Stripe Idempotency-Key, is a hash of node,
queue, tenant, window and the queue range it was planned from. The ledger records the
range as planned in the same transaction as its batches (sync/billing/ledger.py), so a
range is never planned twice and a resend always carries the same identifier and value.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from edge_node.errors import NotAUsageEvent
from edge_node.queue import Record
from edge_node.usage.event import read_billable

log = logging.getLogger(__name__)

# A window is taken as complete this long after its end when nothing later has arrived.
WINDOW_CLOSE_GRACE_SECONDS = 2.0
# Records held for an incomplete window before the planner cuts the window in two anyway.
MAX_PENDING_RECORDS = 500_000


@dataclass(frozen=True, slots=True)
class MeterEventBatch:
    """One meter event to be: `value` units of `tenant_id` in the window starting at
    `window_start` (Unix seconds, also the event's Stripe timestamp), summed from `events`
    usage events of queue records `first_seq`..`last_seq` (the range, shared by every batch
    planned from it)."""

    identifier: str
    tenant_id: str
    event_name: str
    window_start: int
    value: int
    events: int
    queue: str
    first_seq: int
    last_seq: int
    # The value by operation (edge_node.usage.operations), for the tenant's usage API; it
    # sums to `value` and plays no part in what is sent.
    operations: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedRange:
    """Queue records `first_seq`..`last_seq` planned: their batches, and the sequence
    numbers of records in the range that are not usage events (logged, never billed)."""

    queue: str
    first_seq: int
    last_seq: int
    batches: tuple[MeterEventBatch, ...]
    unreadable: tuple[int, ...] = ()
    queue_epoch: int = 0
    last_fingerprint: str = ""  # of record last_seq, to tell it from a renumbered one later


def batch_identifier(
    node_id: str,
    queue: str,
    tenant_id: str,
    *,
    window_start: int,
    first_seq: int,
    last_seq: int,
    queue_epoch: int = 0,
) -> str:
    """The meter event identifier (and Idempotency-Key) of a batch: deterministic, short
    enough for Stripe (35 characters), distinct across nodes, queues, tenants, windows and
    queue numberings (`queue_epoch`, 0 until the queue's numbering first restarted behind
    the ledger: identifiers planned before epochs existed stay as they were)."""
    key = f"{node_id}\x1f{queue}\x1f{tenant_id}\x1f{window_start}\x1f{first_seq}\x1f{last_seq}"
    if queue_epoch:
        key += f"\x1fepoch {queue_epoch}"
    return "en_" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


@dataclass(slots=True)  # not frozen: one is made per record, and frozen triples that cost
class _Usage:
    """The part of a usage event billing needs; tenant None: the record is not one."""

    seq: int
    tenant_id: str | None
    units: int
    window_start: int
    fingerprint: int
    operation: str = ""


class UsagePlanner:
    """Cuts the records of one queue, read in order, into planned ranges of whole windows."""

    def __init__(
        self,
        *,
        node_id: str,
        queue: str,
        event_name: str,
        window_seconds: int,
        planned_through: int,
        queue_epoch: int = 0,
        close_grace_seconds: float = WINDOW_CLOSE_GRACE_SECONDS,
        max_pending: int = MAX_PENDING_RECORDS,
    ) -> None:
        if window_seconds < 1:
            raise ValueError(f"window_seconds must be at least 1, got {window_seconds}")
        self.node_id = node_id
        self.queue = queue
        self.event_name = event_name
        self.window_seconds = window_seconds
        self.close_grace_seconds = close_grace_seconds
        self.max_pending = max_pending
        self.planned_through = planned_through
        self.queue_epoch = queue_epoch
        self.read_through = planned_through
        self._pending: list[_Usage] = []

    @property
    def pending(self) -> int:
        """Records read and held for a window not complete yet."""
        return len(self._pending)

    def extend(self, records: Sequence[Record]) -> None:
        """Take records read from the queue just after `read_through`, in order."""
        for record in records:
            if record.seq != self.read_through + 1:
                raise ValueError(
                    f"queue {self.queue}: expected record {self.read_through + 1}, got "
                    f"{record.seq}; records must be read in order after read_through"
                )
            self._pending.append(self._usage(record))
            self.read_through = record.seq

    def take(self, now: float, *, read_everything: bool) -> PlannedRange | None:
        """The next range of complete windows, or None when none is complete yet.

        `read_everything`: no durable record after `read_through` existed at the last read,
        so the newest window can be complete by the clock alone: past its end, or (stepped
        back) before its start.
        """
        if not self._pending:
            return None
        cut = self._cut(now, read_everything)
        if cut == 0:
            return None
        taken, self._pending = self._pending[:cut], self._pending[cut:]
        planned = self._plan(taken)
        self.planned_through = planned.last_seq
        return planned

    def _cut(self, now: float, read_everything: bool) -> int:
        """How many pending records form complete windows: all but the trailing run of
        records sharing the newest record's window, unless that window is complete too."""
        pending = self._pending
        newest = pending[-1].window_start
        closes_at = newest + self.window_seconds + self.close_grace_seconds
        by_clock = now >= closes_at or now < newest
        if (read_everything and by_clock) or len(pending) >= self.max_pending:
            return len(pending)
        cut = len(pending)
        while cut > 0 and pending[cut - 1].window_start == newest:
            cut -= 1
        return cut

    def _plan(self, taken: list[_Usage]) -> PlannedRange:
        first_seq, last_seq = taken[0].seq, taken[-1].seq
        sums: dict[tuple[str, int], list[int]] = {}
        by_operation: dict[tuple[str, int], dict[str, int]] = {}
        unreadable: list[int] = []
        for usage in taken:
            if usage.tenant_id is None:
                unreadable.append(usage.seq)
                continue
            if usage.units <= 0:
                continue
            totals = sums.setdefault((usage.tenant_id, usage.window_start), [0, 0])
            totals[0] += usage.units
            totals[1] += 1
            operations = by_operation.setdefault((usage.tenant_id, usage.window_start), {})
            operations[usage.operation] = operations.get(usage.operation, 0) + usage.units
        batches = tuple(
            MeterEventBatch(
                batch_identifier(
                    self.node_id,
                    self.queue,
                    tenant_id,
                    window_start=window_start,
                    first_seq=first_seq,
                    last_seq=last_seq,
                    queue_epoch=self.queue_epoch,
                ),
                tenant_id,
                self.event_name,
                window_start,
                value,
                events,
                self.queue,
                first_seq,
                last_seq,
                tuple(sorted(by_operation[tenant_id, window_start].items())),
            )
            for (tenant_id, window_start), (value, events) in sorted(sums.items())
        )
        return PlannedRange(
            self.queue,
            first_seq,
            last_seq,
            batches,
            tuple(unreadable),
            self.queue_epoch,
            f"{taken[-1].fingerprint:08x}",
        )

    def _usage(self, record: Record) -> _Usage:
        """The billing-relevant fields of a record; a record that is not a usage event keeps
        its place in the range (so the range stays contiguous) but bills nothing."""
        window_ms = self.window_seconds * 1000
        usage = read_billable(record.payload)
        if isinstance(usage, NotAUsageEvent):
            log.error(
                "queue %s record %d is not a usage event and is not billed: %s",
                self.queue,
                record.seq,
                usage,
            )
            return _Usage(
                record.seq,
                None,
                0,
                record.timestamp_ms // window_ms * self.window_seconds,
                record_fingerprint(record),
            )
        return _Usage(
            record.seq,
            usage.tenant_id,
            usage.units,
            usage.timestamp_ms // window_ms * self.window_seconds,
            record_fingerprint(record),
            usage.operation,
        )


def record_fingerprint(record: Record) -> int:
    """A checksum of a record's payload: a record planned before and one that later took its
    number after the queue's numbering restarted differ (their event ids do)."""
    return zlib.crc32(record.payload)
