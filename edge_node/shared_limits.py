"""Per-tenant token buckets shared by every worker of `serve --workers N`.

With one process the buckets live in its memory (edge_node/ratelimit.py). With N workers on
one port each would keep its own, and a tenant whose connections the kernel spreads over
them would get up to N times its limit; so the supervisor creates one buckets file in the
data directory before it starts the workers, and every worker maps it and takes tokens
from the same bucket.

    header  16 bytes  b"ENRATES1", slots (uint32), reserved (uint32)
    slot    64 bytes  tenant id (36 bytes, ASCII, NUL-padded), capacity (uint32),
                      tokens (float64), updated (float64, CLOCK_MONOTONIC seconds)

A tenant's slot is found by hashing its id and probing forward; a free slot is claimed
under a lock of the header, a bucket is updated under a lock of its slot's first byte
(POSIX record locks, about two microseconds for the pair; the kernel drops them when a
worker dies, so a killed worker never leaves one held). Each worker remembers the slots it
found, so only a tenant's first request in a worker looks in the table. The monotonic clock
is the machine's, the same in every process; the supervisor starts the file afresh, so
nothing outlives a restart of the node (a boot resets that clock). Should the table ever
fill, a tenant that finds no slot falls back to a bucket of the worker's own (logged once).
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
from pathlib import Path

from edge_node.ratelimit import RateDecision, RateLimiter, TokenBucket

log = logging.getLogger(__name__)

FILE_NAME = "rate-limits.buckets"
MAGIC = b"ENRATES1"
DEFAULT_SLOTS = 1 << 18  # 16 MiB of file, sparse: pages only for tenants seen
_HEADER = struct.Struct("<8sII")
_SLOT = struct.Struct("<36sIdd8x")
_BUCKET = struct.Struct("<Idd")  # capacity, tokens, updated
_BUCKET_AT = 36  # offset of the bucket within a slot
_TENANT_BYTES = 36


def buckets_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def create_buckets_file(path: Path, slots: int = DEFAULT_SLOTS) -> None:
    """A new, empty buckets file at `path`, replacing any left by an earlier run (renamed
    into place: a worker never maps a half-made one)."""
    scratch = path.with_name(path.name + ".new")
    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, _HEADER.size + slots * _SLOT.size)
        os.pwrite(fd, _HEADER.pack(MAGIC, slots, 0), 0)
    finally:
        os.close(fd)
    scratch.replace(path)


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose buckets are those of the buckets file at `path`, shared with the
    other processes that map it."""

    def __init__(
        self,
        path: Path,
        default_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_per_minute, clock)
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
            magic, slots, _ = _HEADER.unpack_from(self._map, 0)
            if magic != MAGIC or len(self._map) < _HEADER.size + slots * _SLOT.size:
                raise ValueError(f"{path} is not a rate-limit buckets file")
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
            bucket = TokenBucket(capacity, now)
            if held == capacity:  # else new, or its limit changed: a full bucket
                bucket.tokens, bucket.updated = tokens, min(updated, now)
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
                "%s is full (%d tenants): tenants without a slot are limited per worker",
                self.path,
                self._slots,
            )
        return None
