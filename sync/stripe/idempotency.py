"""Idempotency-Keys of Stripe creates, by generation, so a 500 Stripe saved for a key ends.

Every create carries a key derived from what it makes (`edge-node:customer:<tenant>`), so a
retry after a lost answer gets the first answer back instead of a second object. Stripe saves
the first answer for a key, a 500 included, and replays it for 24 hours: a create that got a
500 would fail for a day. So each key has a generation, kept in node.sqlite (a named
value, `stripe.create_key.<scope>`, value `<generation> <failed at>`):

    generation 0: edge-node:<scope>            (the keys used before generations existed)
    generation n: edge-node:<scope>:g<n>

A 5xx on a create is recorded against the current generation. The next attempt looks the
object up (by metadata, lookup key, the customer's subscriptions), consistently where Stripe
offers it; only when it is absent, and the failure is old enough that the failed request
cannot still be running, does the generation move on, durably, before the new key is used.
Every node walks the same keys in the same order, so two nodes provisioning one tenant still
meet on one key and one object.
"""

from __future__ import annotations

import logging
import sqlite3

from edge_node import sqlite
from edge_node.errors import TransientSyncError
from edge_node.node_database import read_value, write_value

log = logging.getLogger(__name__)

PREFIX = "stripe.create_key."
# After a 5xx on a create, a new key is used only this long after it, when the failed
# request cannot still be running inside Stripe.
RETIRE_AFTER_SECONDS = 60.0


class CreateKeys:
    """Key generations per scope, as named values in node.sqlite (or in memory: `None`)."""

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        self._conn = conn
        self._memory: dict[str, tuple[int, float | None]] = {}

    def key(self, scope: str) -> str:
        """The Idempotency-Key of the scope's current generation."""
        generation, _ = self._read(scope)
        return f"edge-node:{scope}" if generation == 0 else f"edge-node:{scope}:g{generation}"

    def failed_at(self, scope: str) -> float | None:
        """When a create under the current key got a 5xx (Unix seconds), if one did."""
        return self._read(scope)[1]

    def record_failure(self, scope: str, at: float) -> None:
        """A create under the current key got a 5xx at `at`; the first failure counts."""
        generation, failed = self._read(scope)
        if failed is None:
            self._write(scope, generation, at)

    def advance(self, scope: str) -> int:
        """Retire the current key: the next create uses a new one; its generation."""
        generation, _ = self._read(scope)
        self._write(scope, generation + 1, None)
        return generation + 1

    def retire_if_failed(self, scope: str, what: str, *, now: float) -> None:
        """Called once a lookup found no object: if the current key got a 5xx, move on to a
        new one, but not before the failed request must have ended (TransientSyncError
        until then, with the wait as retry_after)."""
        failed = self.failed_at(scope)
        if failed is None:
            return
        wait = failed + RETIRE_AFTER_SECONDS - now
        if wait > 0:
            raise TransientSyncError(
                f"Stripe {what}: the last create failed with a 5xx and nothing it made is found"
                f" yet; looking again before a new Idempotency-Key is used, in {wait:.0f} s",
                retry_after=wait,
            )
        generation = self.advance(scope)
        log.warning(
            "Stripe %s: the create got a 5xx, which Stripe replays for its key, and made"
            " nothing; creating under a new key (generation %d)",
            what,
            generation,
        )

    def _read(self, scope: str) -> tuple[int, float | None]:
        if self._conn is None:
            return self._memory.get(scope, (0, None))
        value = read_value(self._conn, PREFIX + scope)
        if value is None:
            return 0, None
        generation, _, failed = value.partition(" ")
        return int(generation), float(failed) if failed else None

    def _write(self, scope: str, generation: int, failed: float | None) -> None:
        if self._conn is None:
            self._memory[scope] = (generation, failed)
            return
        value = f"{generation} {failed!r}" if failed is not None else str(generation)
        with sqlite.transaction(self._conn):
            write_value(self._conn, PREFIX + scope, value)
