"""The meter: each served billable request becomes one usage event on the durable queue.

A route names the operation it performs (one of edge_node/usage/operations.py); an operation
bills the units configured for it (`[meter.units]`, 0 = free), looked up once when the meter
is made. Only answers below 400 bill: validation errors, refusals, 429s and failures never
do. Before the handler runs, the meter reserves room for the event, so a request that could
not be billed is refused (503) before anything is done rather than after a write: a full queue
(`usage-queue-full`); storage that cannot take the event (`storage-unavailable`): the queue's
writer retrying after a failed write, the data directory's filesystem below its free-space
floor (edge_node/usage/room.py), or no room left to allocate in the served-counts file. A
queue write that fails after admission (the floor makes that rare) is retried by the queue
until it is durable; the response waits for it at most `USAGE_WAIT_SECONDS`, then answers
503 `usage-pending`: the write was done and its event will be written.

Each event recorded is also counted per tenant and day in a memory-mapped file of its own
(edge_node/usage/served.py), apart from the queue, so reconciliation can tell usage served from
usage billing holds; an event is counted served only once it is durable, so a count never
exceeds what the queue holds. In `strict` durability the response waits until its event is on
disk: the events of one turn of the event loop are encoded and appended together when it
ends, and awaited through one shared wait and timer (edge_node/usage/batch_wait.py), and the
queue's group commit makes one shared fsync of many such batches. In `batched` it does not: a
crash can lose the events appended since the last group commit, a few milliseconds' worth.
What a batched event bills is counted spent at once, and it is counted served with the other
events of its group commit once that commit is durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_node.clock import now_ms
from edge_node.config import MeterConfig, QueueConfig
from edge_node.errors import ConfigError, ServiceUnavailable, StorageUnavailable
from edge_node.ids import EventIdGenerator
from edge_node.queue import QueueSettings, WriteAheadQueue, open_queue
from edge_node.usage.batch_wait import BatchWait
from edge_node.usage.event import encode_event
from edge_node.usage.operations import OPERATIONS
from edge_node.usage.quotas import PeriodSpend
from edge_node.usage.room import DiskFloor
from edge_node.usage.served import DAY_MS, ServedCounter, counts_path

log = logging.getLogger(__name__)

BILLING_CONSUMER = "billing"
# Generous bound on one encoded event plus its frame, for reserving queue room up front.
EVENT_RESERVATION_BYTES = 1024
RETRY_AFTER_FULL_SECONDS = 30
# How long a strict response waits for its event while the queue retries a failed write.
USAGE_WAIT_SECONDS = 5.0


@dataclass(slots=True)
class MeterStats:
    recorded: int = 0
    recorded_units: int = 0
    rejected_full: int = 0
    rejected_storage: int = 0
    unmetered: int = 0
    failed: int = 0


class Meter:
    """Records usage events for one process's queue; `None` queue means metering is off."""

    def __init__(
        self,
        queue: WriteAheadQueue | None,
        config: MeterConfig,
        node_id: str,
        served: ServedCounter | None = None,
        floor: DiskFloor | None = None,
    ) -> None:
        self.queue = queue
        self.served = served
        # Spend per billing period, counted as usage is counted served (None: metering off).
        self.spend = None if queue is None else PeriodSpend(None if served is None else served.path)
        self.floor = floor
        self.config = config
        self.node_id = node_id
        self.stats = MeterStats()
        self._ids = EventIdGenerator()
        self._units = {op.name: config.units.units(op.name) for op in OPERATIONS}
        self._billable = frozenset(op for op, units in self._units.items() if units)
        self._bills: dict[tuple[str, ...], bool] = {}
        self._reserved = 0
        # Group commits not waited for (batched durability), with the events each carries.
        self._pending: dict[asyncio.Future[int], list[_Event]] = {}
        self._open: _Batch | None = None  # strict events of this turn of the loop
        self._strict = config.durability == "strict"
        self._route_units: dict[tuple[str, ...], int] = {}

    def bills(self, operations: tuple[str, ...]) -> bool:
        """Whether a route performing `operations` is metered (settled once per route)."""
        found = self._bills.get(operations)
        if found is None:
            found = self._bills[operations] = (
                self.queue is not None and not self._billable.isdisjoint(operations)
            )
        return found

    def units(self, operations: tuple[str, ...]) -> int:
        """The most units a route performing `operations` bills for one request (settled once
        per route)."""
        found = self._route_units.get(operations)
        if found is None:
            found = self._route_units[operations] = max(
                self._units.get(operation, 0) for operation in operations
            )
        return found

    def reserve(self) -> bool:
        """Hold queue room for one event; False when full and `on_full` lets the request through.

        Raises 503 `usage-queue-full` when full and `on_full = "reject"`, and 503
        `storage-unavailable` whatever `on_full` says when storage cannot take the event.
        """
        assert self.queue is not None
        self._check_storage()
        if self.queue.free_bytes() >= (self._reserved + 1) * EVENT_RESERVATION_BYTES:
            self._reserved += 1
            return True
        if self.config.on_full == "serve_unmetered":
            self.stats.unmetered += 1
            return False
        self.stats.rejected_full += 1
        raise ServiceUnavailable(
            "the usage queue is full; this request cannot be billed, so it was not served",
            slug="usage-queue-full",
            headers={"Retry-After": str(RETRY_AFTER_FULL_SECONDS)},
        )

    def release(self) -> None:
        self._reserved -= 1

    def storage_problem(self) -> str | None:
        """Why storage cannot take usage events now (for `/readyz`), or None."""
        if self.queue is not None and self.queue.write_failure is not None:
            return f"the usage queue cannot write: {self.queue.write_failure}"
        if self.floor is not None:
            return self.floor.shortfall()
        return None

    def _check_storage(self) -> None:
        """Refuse before anything is done when the event could not be stored."""
        reason = self.storage_problem()
        if reason is None and self.served is not None:
            try:
                self.served.ensure_room(self._reserved + 1)
            except OSError as exc:
                reason = f"the served-counts file cannot grow: {exc}"
        if reason is not None:
            self.stats.rejected_storage += 1
            raise StorageUnavailable(
                f"{reason}; this request could not be billed, so it was not served"
            )

    async def record(self, tenant_id: str, operation: str, status: int, request_id: str) -> bool:
        """Append the usage event of a served request (within a reservation); False when the
        request bills nothing. In strict durability, wait for the event's group commit (it
        is counted served once durable: a count never exceeds what the queue holds). A
        queue retrying a failed write gets a bounded wait, after which the event stays
        queued (and is counted served once it is durable) and the answer says so.

        Strict events recorded in one turn of the loop are appended together at its end
        (`_flush`) and awaited together through one wait: each request only adds its event
        to the open batch. One coroutine, the wait included: a strict request suspends here,
        and every frame between the handler and the wait is resumed once more per request."""
        assert self.queue is not None
        units = self._units.get(operation, 0)
        if units == 0 or status >= 400:
            return False
        # The node's clock never steps back: usage stays in its window when the wall clock does.
        event = (tenant_id, operation, status, units, now_ms(), request_id)
        if self._strict:
            batch = self._open or self._open_batch()
            batch.events.append(event)
            try:
                await batch.wait
            except TimeoutError:
                raise StorageUnavailable(
                    "the request was carried out; its usage event is queued and will be "
                    "written once storage takes writes again",
                    slug="usage-pending",
                ) from None
            except Exception as exc:  # the batch could not be appended, or its commit failed
                self._failed(exc)
                raise _not_recorded() from exc
        else:
            try:
                durable = self._append([event])
            except Exception as exc:  # as in strict: any failure to append answers 503
                self._failed(exc)
                raise _not_recorded() from exc
            self._track(durable, event)
            if self.spend is not None:  # spent now; counted served once durable (_settled)
                self.spend.add(tenant_id, event[4], units)
        self.stats.recorded += 1
        self.stats.recorded_units += units
        return True

    def _open_batch(self) -> _Batch:
        """The batch this turn's strict events join, appended when the turn ends."""
        loop = asyncio.get_running_loop()
        batch = self._open = _Batch(loop, USAGE_WAIT_SECONDS, self._expired)
        loop.call_soon(self._flush)
        return batch

    def _flush(self) -> None:
        """Append the open batch's events for one group commit; its wait follows that commit."""
        batch, self._open = self._open, None
        if batch is None:  # flushed already, by close()
            return
        try:
            durable = self._append(batch.events)
        except Exception as exc:  # its requests answer 503, never wait out the timer
            batch.wait.fail(exc)
            return
        batch.wait.follow(durable)
        durable.add_done_callback(functools.partial(self._durable, batch))

    def _append(self, events: list[_Event]) -> asyncio.Future[int]:
        """Encode `events` and queue them for the next group commit; raising as the queue's
        append does (all of them queued or none)."""
        assert self.queue is not None
        new_id, node_id = self._ids.new, self.node_id
        payloads = [
            encode_event(
                event_id=new_id(timestamp_ms),
                tenant_id=tenant_id,
                node_id=node_id,
                operation=operation,
                status=status,
                units=units,
                timestamp_ms=timestamp_ms,
                request_id=request_id,
            )
            for tenant_id, operation, status, units, timestamp_ms, request_id in events
        ]
        return self.queue.append_shared_many(payloads, [event[4] for event in events])

    def _expired(self, batch: _Batch) -> None:
        """A batch's wait ran out before its commit was durable: its requests are answered
        `usage-pending` now, and what they bill is spent now (an allowance is never passed
        while the events wait for the disk); they are counted served once durable."""
        batch.spent = True
        if self.spend is not None:
            for tenant_id, _, _, units, timestamp_ms, _ in batch.events:
                self.spend.add(tenant_id, timestamp_ms, units)

    def _durable(self, batch: _Batch, durable: asyncio.Future[int]) -> None:
        """The batch's commit settled: count its events served (and spent, unless they were
        when the wait ran out); a failure its requests were no longer waiting for is logged."""
        if durable.cancelled():
            return
        error = durable.exception()
        if error is None:
            self._count(batch.events, spend=not batch.spent)
        elif batch.spent:
            self.stats.failed += len(batch.events) - 1
            self._failed(error)

    def _track(self, durable: asyncio.Future[int], event: _Event) -> None:
        """Keep a group commit not waited for until it settles, with the events it carries:
        they are counted served together once it is durable (`_settled`)."""
        events = self._pending.get(durable)
        if events is None:
            durable.add_done_callback(self._settled)
            events = self._pending[durable] = []
        events.append(event)

    def _count(self, events: list[_Event], *, spend: bool) -> None:
        """Count `events` served, apart from the queue, for reconciliation, and with `spend`
        spent, one addition per tenant and day; a count that cannot be stored is logged,
        never a failed request (the events are already queued)."""
        groups: dict[tuple[str, int], list[int]] = {}  # -> [timestamp, events, units]
        for tenant_id, _, _, units, timestamp_ms, _ in events:
            group = groups.get(key := (tenant_id, timestamp_ms // DAY_MS))
            if group is None:
                groups[key] = [timestamp_ms, 1, units]
            else:
                group[1] += 1
                group[2] += units
        for (tenant_id, _), (timestamp_ms, count, units) in groups.items():
            if spend and self.spend is not None:
                self.spend.add(tenant_id, timestamp_ms, units)
            if self.served is not None:
                try:
                    self.served.add(tenant_id, timestamp_ms, units, events=count)
                except OSError as exc:
                    log.error("served count of tenant %s not stored: %s", tenant_id, exc)

    async def close(self) -> None:
        """Make every event recorded so far durable, then close the queue (which, on a disk
        that stays full, writes into its reserve and gives up after a bound rather than wait
        past the service's stop timeout)."""
        self._flush()  # the events of this turn, before the queue stops taking any
        if self.queue is not None:
            await self.queue.close()
        if self.served is not None:
            self.served.close()
            self.served = None

    def _settled(self, durable: asyncio.Future[int]) -> None:
        """A group commit not waited for settled: its events counted served, or its failure
        logged."""
        events = self._pending.pop(durable, [])
        if durable.cancelled():
            return
        error = durable.exception()
        if error is None:
            self._count(events, spend=False)
        else:
            self.stats.failed += len(events) - 1
            self._failed(error)

    def _failed(self, exc: BaseException | None) -> None:
        self.stats.failed += 1
        log.error("usage event not recorded: %s", exc)


# An event as the meter holds it until it is appended: tenant, operation, status, units,
# timestamp (ms), request id.
_Event = tuple[str, str, int, int, int, str]


class _Batch:
    """Strict events recorded in one turn of the loop: appended together, awaited together."""

    __slots__ = ("events", "spent", "wait")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        expired: Callable[[_Batch], None],
    ) -> None:
        self.events: list[_Event] = []
        self.spent = False  # counted spent when the wait ran out, before it was durable
        self.wait = BatchWait(loop, timeout, on_expire=functools.partial(expired, self))


def _not_recorded() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the request was carried out but its usage could not be recorded durably; retrying"
        " it is safe for upserts and reads",
        slug="usage-not-recorded",
        headers={"Retry-After": "5"},
    )


def queue_settings(config: QueueConfig, meter: MeterConfig | None = None) -> QueueSettings:
    """The usage queue's settings; in `batched` durability (`meter`), group commits gather
    events for at least `meter.batched_commit_interval_ms`: nobody waits for their fsync, so
    one need not be made for each request when requests are few."""
    interval_ms = config.commit_interval_ms
    if meter is not None and meter.durability == "batched":
        interval_ms = max(interval_ms, meter.batched_commit_interval_ms)
    return QueueSettings(
        segment_bytes=config.segment_bytes,
        max_bytes=config.max_bytes,
        commit_interval=interval_ms / 1000,
    )


async def open_meter(
    config: MeterConfig,
    queue_config: QueueConfig,
    directory: Path,
    node_id: str,
    *,
    fsync: Callable[[int], None] = os.fsync,
    min_free_bytes: int = 0,
) -> Meter:
    """The meter of one worker process, owning its queue directory (None queue when off)."""
    if not config.enabled:
        return Meter(None, config, node_id)
    try:
        settings = queue_settings(queue_config, config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    queue = await open_queue(
        directory, consumers=(BILLING_CONSUMER,), settings=settings, fsync=fsync
    )
    try:
        served = ServedCounter(counts_path(directory))
    except BaseException:
        await queue.close()
        raise
    return Meter(queue, config, node_id, served, DiskFloor(directory, min_free_bytes))
