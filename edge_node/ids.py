"""Identifier formats shared across the node: canonical UUIDs, and time-ordered UUIDv7 event ids."""

from __future__ import annotations

import random
import re

from edge_node import clock

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value: str) -> bool:
    return UUID_PATTERN.fullmatch(value) is not None  # match() lets "$" pass a trailing newline


class EventIdGenerator:
    """UUIDv7 (RFC 9562): 48-bit millisecond time, then randomness, so ids sort by time.

    Within one millisecond the 12-bit `rand_a` field counts up from a random start, so the
    ids one process makes are strictly increasing; the 62 random bits of `rand_b` keep ids
    of different nodes apart. They need to be unique, not secret: `random` (seeded from the
    system's entropy at start and again in a forked child) spares each id a system call.
    """

    def __init__(self) -> None:
        self._last_ms = -1
        self._counter = 0
        self._prefix = ""  # the text of `_last_ms`: "tttttttt-tttt-"

    def new(self, now_ms: int | None = None) -> str:
        ms = clock.now_ms() if now_ms is None else now_ms
        randomness = random.getrandbits(64)
        if ms > self._last_ms:
            self._counter = randomness >> 53  # an 11-bit random start
            self._start(ms)
        else:
            self._counter += 1
            if self._counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                self._counter = 0
                self._start(self._last_ms + 1)
        # Version 7 and the counter, then the variant (0b10) and 62 random bits, as hex in one
        # call (a format spec per field costs several times as much); the time is written
        # once a millisecond.
        digits = (
            (
                (0x7000 | self._counter) << 64
                | 0x8000_0000_0000_0000
                | randomness & 0x3FFF_FFFF_FFFF_FFFF
            )
            .to_bytes(10, "big")
            .hex()
        )
        return f"{self._prefix}{digits[:4]}-{digits[4:8]}-{digits[8:]}"

    def _start(self, ms: int) -> None:
        """Make `ms` the millisecond ids are counted in."""
        self._last_ms = ms
        digits = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
        self._prefix = f"{digits[:8]}-{digits[8:]}-"
