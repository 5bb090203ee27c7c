"""Per-tenant token buckets shared by every worker of `serve --workers N`.

With one process the buckets live in its memory (edge_node/admission/ratelimit.py). With N workers
on one port each would keep its own, and a tenant whose connections the kernel spreads over
them would get up to N times its limit; so the supervisor makes one table of buckets in
anonymous shared memory (a memfd: no file on any disk, so no disk-full fault, no
write-back, nothing another process can delete or replace) before it starts the workers,
passes its descriptor to each (`serve --buckets-fd`, also to a worker it restarts), and
every worker maps it and takes tokens from the same bucket.

    header  16 bytes  b"ENRATES1", slots (uint32), reserved (uint32)
    slot    64 bytes  tenant id (36 bytes, ASCII, NUL-padded), capacity (uint32),
                      tokens (float64), updated (float64, CLOCK_MONOTONIC seconds)

A tenant's slot is found by hashing its id and probing forward; a free slot is claimed
under a lock of the header, a bucket is updated under a lock of its slot's first byte
(POSIX record locks: a few microseconds for the pair, `python -m bench.ratelimit`; the
kernel drops them when a worker dies, so a killed worker never leaves one held). Each
worker remembers the slots it found, so only a tenant's first request in a worker looks in
the table. The monotonic clock is the machine's, the same in every process; the table
lives as long as the supervisor. A limit that changes (a registry update, a SIGHUP read by
one worker before another) keeps the tokens the bucket holds, up to the new size: workers
that briefly disagree on a limit never refill a bucket for each other. Should the table
ever fill, a tenant that finds no slot falls back to a bucket of the worker's own (logged
once).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable

from edge_node.admission.ratelimit import RateDecision, RateLimiter, TokenBucket

log = logging.getLogger(__name__)

MAGIC = b"ENRATES1"
DEFAULT_SLOTS = 1 << 18  # 16 MiB of shared memory at most: pages only for tenants seen
_HEADER = struct.Struct("<8sII")
_SLOT = struct.Struct("<36sIdd8x")
_BUCKET = struct.Struct("<Idd")  # capacity, tokens, updated
_BUCKET_AT = 36  # offset of the bucket within a slot
_TENANT_BYTES = 36


def create_buckets(slots: int = DEFAULT_SLOTS) -> int:
    """A new, empty table of buckets in shared memory: its descriptor (close-on-exec; give
    it to a worker with `pass_fds`)."""
    fd = os.memfd_create("edge-node-rate-limits", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, _HEADER.size + slots * _SLOT.size)
        os.pwrite(fd, _HEADER.pack(MAGIC, slots, 0), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose buckets are those of the table behind descriptor `fd`, shared
    with the other processes that map it. The limiter works on a duplicate of `fd` and
    closes only that."""

    def __init__(
        self,
        fd: int,
        default_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_per_minute, clock)
        self._fd = os.dup(fd)
        try:
            size = os.fstat(self._fd).st_size
            if size < _HEADER.size:
                raise ValueError(f"descriptor {fd} is not a rate-limit buckets table")
            self._map = mmap.mmap(self._fd, size)
            magic, slots, _ = _HEADER.unpack_from(self._map, 0)
            if magic != MAGIC or size < _HEADER.size + slots * _SLOT.size:
                self._map.close()
                raise ValueError(f"descriptor {fd} is not a rate-limit buckets table")
        except BaseException:
            os.close(self._fd)
            raise
        self._slots = int(slots)
        self._offsets: dict[str, int] = {}
        self._overflow: set[str] = set()  # tenants that found the table full

    def take(self, tenant_id: str, per_minute: int | None) -> RateDecision:
        capacity = per_minute or self.default_per_minute
        offset = self._offsets.get(tenant_id)
        if offset is None:
            found = None if tenant_id in self._overflow else self._find_slot(tenant_id)
            if found is None:
                self._overflow.add(tenant_id)
                return super().take(tenant_id, per_minute)
            offset = self._offsets[tenant_id] = found
        at = offset + _BUCKET_AT
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)
        try:
            now = self._clock()
            held, tokens, updated = _BUCKET.unpack_from(self._map, at)
            bucket = TokenBucket(capacity, now)  # a new slot: a full bucket
            if held == capacity:
                bucket.tokens, bucket.updated = tokens, min(updated, now)
            elif held:  # the limit changed: what the old bucket holds now, up to the new size
                elapsed = max(0.0, now - updated)
                bucket.tokens = min(held, tokens + elapsed * held / 60.0, capacity)
            decision = bucket.take(now)
            _BUCKET.pack_into(self._map, at, capacity, bucket.tokens, bucket.updated)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
        return decision

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _find_slot(self, tenant_id: str) -> int | None:
        """The offset of the tenant's slot, claimed now if it has none; None if the table
        is full."""
        encoded = tenant_id.encode("ascii").ljust(_TENANT_BYTES, b"\0")
        if len(encoded) > _TENANT_BYTES:
            raise ValueError(f"tenant id {tenant_id!r} is longer than 36 characters")
        start = int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
        try:
            for probe in range(self._slots):
                offset = _HEADER.size + (start + probe) % self._slots * _SLOT.size
                held = self._map[offset : offset + _TENANT_BYTES]
                if held == encoded:
                    return offset
                if not held.strip(b"\0"):
                    self._map[offset : offset + _TENANT_BYTES] = encoded
                    return offset
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
        if not self._overflow:
            log.error(
                "the shared rate-limit table is full (%d tenants): tenants without a slot"
                " are limited per worker",
                self._slots,
            )
        return None
