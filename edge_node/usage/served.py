"""Served-request counters: per tenant and UTC day, kept where requests are served.

Reconciliation (`edge-node billing reconcile`) compares what billing holds (queued usage and
ledger batches) with an independent count of what was served. The meter adds every usage
event it records here (edge_node/usage/meter.py), so usage lost before it reached the queue, or
lost by the queue, shows up as served but not accounted for.

One file per worker process, `data_dir/served/<queue name>.counts`, memory-mapped: a count
is two integer stores into shared file pages, about a microsecond, with no system call and
no fsync on the request path. Pages of a shared mapping belong to the kernel's page cache
the moment they are written, so the counts survive the process being killed (SIGKILL, a
crash); an OS crash or power loss can lose the last few seconds not yet written back (the
file is synced about every `SYNC_EVERY_SECONDS` while counting, and on close).

    header  16 bytes  b"ENSERVD1", slots in use (uint32), reserved (uint32)
    slot    64 bytes  tenant id (36 bytes, ASCII, NUL-padded), UTC day (uint32, days
                      since the epoch), events (uint64), units (uint64)

A slot is filled before the header counts it, so a process killed in between leaves a slot
that nobody reads. The file grows by doubling.

Every page of the file is allocated for real (`posix_fallocate`) before it is mapped: a store
into a hole of a sparse file on a full filesystem is not an error the process can answer but
SIGBUS, which kills it. The meter asks for room before each billable request
(`ensure_room`), so the file grows, or fails to with an OSError answered 503, before the
request is served, never inside `add`.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"ENSERVD1"
_HEADER = struct.Struct("<8sII")
_SLOT = struct.Struct("<36s4xI4xQQ")
_COUNTS = struct.Struct("<QQ")
_COUNTS_AT = 48  # offset of (events, units) within a slot
INITIAL_SLOTS = 1024
SYNC_EVERY_SECONDS = 5.0
SYNC_CHECK_EVERY = 1024  # requests counted between looks at the clock
DAY_MS = 86_400_000


class ServedCounter:
    """The counts file of one worker process, open for adding (one writer)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(self._fd).st_size
            if size < _HEADER.size:
                size = _file_size(INITIAL_SLOTS)
                os.posix_fallocate(self._fd, 0, size)
                os.pwrite(self._fd, _HEADER.pack(MAGIC, 0, 0), 0)
            else:
                os.posix_fallocate(self._fd, 0, size)  # a file made sparse by older versions
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        magic, used, _ = _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC:
            raise ValueError(f"{path} is not a served-requests counts file")
        self._used = int(used)
        self._slots: dict[tuple[str, int], int] = {
            (tenant, day): index for index, (tenant, day, _, _) in enumerate(self._read())
        }
        self._synced_at = time.monotonic()
        self._adds = 0

    @property
    def free_slots(self) -> int:
        """Slots the file holds, allocated, beyond those in use."""
        return (len(self._map) - _HEADER.size) // _SLOT.size - self._used

    def ensure_room(self, slots: int) -> None:
        """Grow the file until `slots` more slots fit; OSError (ENOSPC...) when it cannot."""
        while self.free_slots < slots:
            self._grow()

    def add(self, tenant_id: str, timestamp_ms: int, units: int, *, events: int = 1) -> None:
        """Count `events` requests (one by default) served for `tenant_id` on the day of
        `timestamp_ms`, billing `units` in all.

        A new (tenant, day) takes a slot; callers have made room for it with `ensure_room`,
        or the file grows here (and an OSError says it could not)."""
        key = (tenant_id, timestamp_ms // DAY_MS)
        index = self._slots.get(key)
        if index is None:
            index = self._allocate(*key)
        offset = _HEADER.size + index * _SLOT.size + _COUNTS_AT
        served, total = _COUNTS.unpack_from(self._map, offset)
        _COUNTS.pack_into(self._map, offset, served + events, total + units)
        self._adds += events  # requests counted since the clock was last looked at
        if self._adds >= SYNC_CHECK_EVERY:
            self._adds = 0
            if time.monotonic() - self._synced_at >= SYNC_EVERY_SECONDS:
                self.sync()

    def sync(self) -> None:
        """Write the counts back to disk (for power loss; a killed process loses nothing)."""
        self._map.flush()
        self._synced_at = time.monotonic()

    def close(self) -> None:
        self.sync()
        self._map.close()
        os.close(self._fd)

    def _allocate(self, tenant_id: str, day: int) -> int:
        encoded = tenant_id.encode("ascii")
        if len(encoded) > 36:
            raise ValueError(f"tenant id {tenant_id!r} is longer than 36 characters")
        index = self._used
        if _file_size(index + 1) > len(self._map):
            self._grow()
        _SLOT.pack_into(self._map, _HEADER.size + index * _SLOT.size, encoded, day, 0, 0)
        self._used = index + 1
        _HEADER.pack_into(self._map, 0, MAGIC, self._used, 0)
        self._slots[(tenant_id, day)] = index
        return index

    def _grow(self) -> None:
        """Double the file: its new pages allocated first, so the old mapping stays in use
        when that fails."""
        size = _file_size(2 * ((len(self._map) - _HEADER.size) // _SLOT.size))
        os.posix_fallocate(self._fd, 0, size)
        self._map.flush()
        self._map.close()
        self._map = mmap.mmap(self._fd, size)

    def _read(self) -> Iterator[tuple[str, int, int, int]]:
        yield from _slots(self._map, self._used)


SERVED_DIR = "served"  # under data_dir: every worker's counts file


def read_counts(path: Path) -> list[tuple[str, int, int, int]]:
    """Every (tenant id, UTC day, events, units) of a counts file, read without its writer's
    help (reconciliation runs beside the daemon)."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        return []
    magic, used, _ = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"{path} is not a served-requests counts file")
    used = min(used, (len(data) - _HEADER.size) // _SLOT.size)
    return list(_slots(data, used))


def counts_path(queue_directory: Path) -> Path:
    """The counts file of the worker owning `queue_directory` (data_dir/queue/worker-N)."""
    return queue_directory.parent.parent / SERVED_DIR / f"{queue_directory.name}.counts"


def _slots(buffer: bytes | mmap.mmap, used: int) -> Iterator[tuple[str, int, int, int]]:
    for index in range(used):
        raw, day, events, units = _SLOT.unpack_from(buffer, _HEADER.size + index * _SLOT.size)
        tenant = raw.rstrip(b"\0").decode("ascii", "replace")
        if tenant:
            yield tenant, day, events, units


def _file_size(slots: int) -> int:
    return _HEADER.size + slots * _SLOT.size
