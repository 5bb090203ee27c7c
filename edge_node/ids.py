"""Identifier formats shared across the node: canonical UUIDs, and time-ordered UUIDv7 event ids."""

from __future__ import annotations

import os
import re

from edge_node import clock

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value: str) -> bool:
    return UUID_PATTERN.fullmatch(value) is not None  # match() lets "$" pass a trailing newline


class EventIdGenerator:
    """UUIDv7 (RFC 9562): 48-bit millisecond time, then randomness, so ids sort by time.

    Within one millisecond the 12-bit `rand_a` field counts up from a random start, so the
    ids one process makes are strictly increasing; the 62 random bits of `rand_b` keep ids
    of different nodes apart.
    """

    def __init__(self) -> None:
        self._last_ms = -1
        self._counter = 0

    def new(self, now_ms: int | None = None) -> str:
        ms = clock.now_ms() if now_ms is None else now_ms
        randomness = int.from_bytes(os.urandom(8))
        if ms > self._last_ms:
            self._last_ms, self._counter = ms, randomness >> 53  # an 11-bit random start
        else:
            self._counter += 1
            if self._counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                self._last_ms, self._counter = self._last_ms + 1, 0
            ms = self._last_ms
        value = (
            (ms & 0xFFFF_FFFF_FFFF) << 80
            | 0x7 << 76
            | self._counter << 64
            | 0b10 << 62
            | randomness & 0x3FFF_FFFF_FFFF_FFFF
        )
        digits = f"{value:032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
