"""The meter: each served billable request becomes one usage event on the durable queue.

A route names the operation it performs (one of edge_node/usage/operations.py); an operation
bills the units configured for it (`[meter.units]`, 0 = free), looked up once when the meter
is made. Only answers below 400 bill: validation errors, refusals, 429s and failures never
do. Before the handler runs, the meter reserves room in the queue for the event, so a full
queue refuses the request (503) before anything is done rather than after a write it could
not bill.

Each event recorded is also counted per tenant and day in a memory-mapped file of its own
(edge_node/usage/served.py), apart from the queue, so reconciliation can tell usage served from
usage billing holds. In `strict` durability the response waits until its event is on
disk (the queue's group commit makes that one shared fsync for many requests). In
`batched` it does not: a crash can lose the events appended since the last group commit, a
few milliseconds' worth.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_node.config import MeterConfig, QueueConfig
from edge_node.errors import ConfigError, ServiceUnavailable
from edge_node.ids import EventIdGenerator
from edge_node.queue import QueueError, QueueSettings, WriteAheadQueue, open_queue
from edge_node.usage.event import encode_event
from edge_node.usage.operations import OPERATIONS
from edge_node.usage.served import ServedCounter, counts_path

log = logging.getLogger(__name__)

BILLING_CONSUMER = "billing"
# Generous bound on one encoded event plus its frame, for reserving queue room up front.
EVENT_RESERVATION_BYTES = 1024
RETRY_AFTER_FULL_SECONDS = 30


@dataclass(slots=True)
class MeterStats:
    recorded: int = 0
    recorded_units: int = 0
    rejected_full: int = 0
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
    ) -> None:
        self.queue = queue
        self.served = served
        self.config = config
        self.node_id = node_id
        self.stats = MeterStats()
        self._ids = EventIdGenerator()
        self._units = {op.name: config.units.units(op.name) for op in OPERATIONS}
        self._billable = frozenset(op for op, units in self._units.items() if units)
        self._bills: dict[tuple[str, ...], bool] = {}
        self._reserved = 0
        self._pending: set[asyncio.Future[int]] = set()

    def bills(self, operations: tuple[str, ...]) -> bool:
        """Whether a route performing `operations` is metered (settled once per route)."""
        found = self._bills.get(operations)
        if found is None:
            found = self._bills[operations] = (
                self.queue is not None and not self._billable.isdisjoint(operations)
            )
        return found

    def reserve(self) -> bool:
        """Hold queue room for one event; False when full and `on_full` lets the request through.

        Raises 503 `usage-queue-full` when full and `on_full = "reject"`.
        """
        assert self.queue is not None
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

    async def record(self, tenant_id: str, operation: str, status: int, request_id: str) -> bool:
        """Append the usage event of a served request (within a reservation); False when the
        request bills nothing."""
        assert self.queue is not None
        units = self._units.get(operation, 0)
        if units == 0 or status >= 400:
            return False
        timestamp_ms = time.time_ns() // 1_000_000
        payload = encode_event(
            event_id=self._ids.new(timestamp_ms),
            tenant_id=tenant_id,
            node_id=self.node_id,
            operation=operation,
            status=status,
            units=units,
            timestamp_ms=timestamp_ms,
            request_id=request_id,
        )
        try:
            durable = self.queue.append_nowait(payload, timestamp_ms=timestamp_ms)
        except QueueError as exc:
            self._failed(exc)
            raise _not_recorded() from exc
        if self.config.durability == "strict":
            try:
                await durable
            except QueueError as exc:
                self._failed(exc)
                raise _not_recorded() from exc
        else:
            self._pending.add(durable)
            durable.add_done_callback(self._settled)
        if self.served is not None:  # counted apart from the queue, for reconciliation
            self.served.add(tenant_id, timestamp_ms, units)
        self.stats.recorded += 1
        self.stats.recorded_units += units
        return True

    async def close(self) -> None:
        """Make every event recorded so far durable, then close the queue."""
        if self.queue is not None:
            await self.queue.flush()
            await self.queue.close()
        if self.served is not None:
            self.served.close()
            self.served = None

    def _settled(self, durable: asyncio.Future[int]) -> None:
        self._pending.discard(durable)
        if not durable.cancelled() and durable.exception() is not None:
            self._failed(durable.exception())

    def _failed(self, exc: BaseException | None) -> None:
        self.stats.failed += 1
        log.error("usage event not recorded: %s", exc)


def _not_recorded() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the request was carried out but its usage could not be recorded durably; retrying"
        " it is safe for upserts and reads",
        slug="usage-not-recorded",
        headers={"Retry-After": "5"},
    )


def queue_settings(config: QueueConfig) -> QueueSettings:
    return QueueSettings(
        segment_bytes=config.segment_bytes,
        max_bytes=config.max_bytes,
        commit_interval=config.commit_interval_ms / 1000,
    )


async def open_meter(
    config: MeterConfig,
    queue_config: QueueConfig,
    directory: Path,
    node_id: str,
    *,
    fsync: Callable[[int], None] = os.fsync,
) -> Meter:
    """The meter of one worker process, owning its queue directory (None queue when off)."""
    if not config.enabled:
        return Meter(None, config, node_id)
    try:
        settings = queue_settings(queue_config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    queue = await open_queue(
        directory, consumers=(BILLING_CONSUMER,), settings=settings, fsync=fsync
    )
    return Meter(queue, config, node_id, ServedCounter(counts_path(directory)))
