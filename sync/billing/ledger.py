"""The billing ledger in node.sqlite: every meter-event batch, from planned to confirmed.

A batch is written here, state `planned`, before it is ever sent, in the same transaction
that records its queue range as planned (a named value, `billing.planned_through.<queue>`).
It becomes `sent` (attempts + 1, first_sent_at kept from the first try) just before each
call, `confirmed` once Stripe holds it, or `set_aside` with a reason when it must not be
sent again. An attempt that turned a `planned` batch `sent` and then failed in a way that
proves Stripe recorded nothing (refused connection, 429, 401, 403) turns it back to
`planned` without first_sent_at. Nothing is ever deleted or re-aggregated: a resend reads
the row back.

    planned --send--> sent --Stripe accepted, or already had it--> confirmed
       |   <--not received--+  (only if this attempt made it `sent`)
       |                |
       +----------------+--refused, too old, outcome undecidable--> set_aside
       ^                |                    confirmed --Stripe reported it invalid--^
       |                |
       +--Stripe's summaries show it never landed: a fresh identifier--+

A flat-plan tenant's batches name the unpriced meter (sync/stripe/catalog.py
`included_event_name`): what they confirm is included in the flat fee, not billed.

Each batch keeps its own window (`window_start`) and the timestamp it was sent with
(`stamp`, chosen inside a period Stripe still invoices, with its `placement`: own,
before_subscription or carried_forward; sync/billing/periods.py).

The ledger has a connection of its own (the request path never waits on its writes) and is
called from one thread at a time (sync/billing/ledger_thread.py, off the event loop). It
owns the `billing` component of node.sqlite (its migrations below, applied when it opens;
edge_node.node_database), and keeps its planning positions in node.sqlite's named values,
in the transactions that plan (sync/billing/queue_positions.py). Times are microseconds
since the epoch; window_start and stamp are Unix seconds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_node import sqlite
from edge_node.node_database import open_node_database, read_value, write_value
from edge_node.tenants import billing_periods
from edge_node.tenants.billing_periods import TenantPeriods
from edge_node.tenants.registry import TenantRegistry
from sync.billing.clock import HIGH_WATER
from sync.billing.ledger_batch import BATCH_COLUMNS, LedgerBatch
from sync.billing.periods import Stamp
from sync.billing.plan import PlannedRange
from sync.billing.queue_positions import QueuePositions
from sync.stripe.catalog import included_event_name
from sync.stripe.periods import SubscriptionPeriods

COMPONENT = "billing"
MIGRATIONS = (
    # 1: the ledger of meter-event batches (written before a batch is sent, so a crash at any
    # point resends the same identifier with the same value).
    """
    CREATE TABLE billing_ledger (
        identifier TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        customer_id TEXT,
        event_name TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        value INTEGER NOT NULL CHECK (value > 0),
        events INTEGER NOT NULL CHECK (events > 0),
        queue TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL CHECK (last_seq >= first_seq),
        state TEXT NOT NULL
            CHECK (state IN ('planned', 'sent', 'confirmed', 'set_aside')),
        attempts INTEGER NOT NULL DEFAULT 0,
        planned_at INTEGER NOT NULL,
        first_sent_at INTEGER,
        confirmed_at INTEGER,
        set_aside_reason TEXT
    ) WITHOUT ROWID;
    CREATE INDEX billing_ledger_open ON billing_ledger (tenant_id, planned_at)
        WHERE state IN ('planned', 'sent');
    CREATE INDEX billing_ledger_by_window ON billing_ledger (tenant_id, window_start);
    """,
    # 2: the queue numbering a batch was planned in (it changes when the queue's numbering
    # restarts behind the ledger), part of its identifier.
    """
    ALTER TABLE billing_ledger ADD COLUMN queue_epoch INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: the timestamp a batch is sent with (inside a period Stripe still invoices, which may
    # not be its window's: sync/billing/periods.py) and why, and the identifier Stripe holds
    # it under (a fresh one once Stripe's summaries showed the first never landed). Batches
    # sent before were stamped with their window's start.
    """
    ALTER TABLE billing_ledger ADD COLUMN stamp INTEGER;
    ALTER TABLE billing_ledger ADD COLUMN placement TEXT
        CHECK (placement IN ('own', 'before_subscription', 'carried_forward'));
    ALTER TABLE billing_ledger ADD COLUMN stripe_identifier TEXT;
    UPDATE billing_ledger SET stamp = window_start, placement = 'own'
        WHERE state IN ('sent', 'confirmed');
    CREATE INDEX billing_ledger_by_stamp ON billing_ledger (customer_id, stamp)
        WHERE stamp IS NOT NULL;
    """,
    # 4: the batch's value by operation, a JSON object (the tenant's usage API breaks usage
    # down by operation); NULL for batches planned before.
    """
    ALTER TABLE billing_ledger ADD COLUMN operations TEXT;
    """,
)
# Written exactly like the partial index billing_ledger_open, so SQLite can use it.
OPEN = "state IN ('planned', 'sent')"


class BillingLedger:
    """The billing_ledger table of node.sqlite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """The ledger on an open node.sqlite (edge_node.node_database), its table migrated."""
        sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)
        self._conn = conn
        self._tenants = TenantRegistry(conn)
        self.periods = TenantPeriods(conn)  # what webhooks said of periods and invoices
        self.positions = QueuePositions(conn)  # where planning stands in each queue

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout_ms: int = 5000) -> BillingLedger:
        """A connection of its own to node.sqlite (synchronous FULL: a confirmation survives
        power loss), migrated like the registry's."""
        return cls(open_node_database(data_dir, busy_timeout_ms=busy_timeout_ms))

    def close(self) -> None:
        self._conn.close()

    def record_periods(self, customer_id: str, periods: SubscriptionPeriods, now: float) -> None:
        """Keep the customer's periods as just read from Stripe
        (edge_node/tenants/billing_periods.py)."""
        drafts = [(d.period_start, d.period_end, d.finalizes_at) for d in periods.drafts]
        current = (periods.period_start, periods.period_end)
        billing_periods.record_reading(self._conn, customer_id, current, drafts, now)

    def ended_unread(self, now: float) -> list[str]:
        """Customers whose periods are to be read again (edge_node/tenants/billing_periods.py)."""
        return billing_periods.ended_unread(self._conn, now)

    def record_plan(self, planned: PlannedRange, now_us: int) -> int:
        """Write a range's batches (state planned, the tenant's Stripe customer if it has
        one) and mark the range planned, in one transaction; the number of batches written.

        A batch already in the ledger is left as it is (ON CONFLICT DO NOTHING, the
        identifier only: an invalid batch still fails the whole plan): a range planned again
        can only bring the same identifiers, and the first write stands.
        """
        with sqlite.transaction(self._conn):
            written = 0
            customers = self._tenants.stripe_customers(b.tenant_id for b in planned.batches)
            flat = self._tenants.on_plan("flat", (b.tenant_id for b in planned.batches))
            for batch in planned.batches:
                written += self._conn.execute(
                    "INSERT INTO billing_ledger (identifier, tenant_id, customer_id,"
                    " event_name, window_start, value, events, queue, first_seq, last_seq,"
                    " state, planned_at, queue_epoch, operations)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?)"
                    " ON CONFLICT (identifier) DO NOTHING",
                    (
                        batch.identifier,
                        batch.tenant_id,
                        customers.get(batch.tenant_id),
                        included_event_name(batch.event_name)
                        if batch.tenant_id in flat
                        else batch.event_name,
                        batch.window_start,
                        batch.value,
                        batch.events,
                        batch.queue,
                        batch.first_seq,
                        batch.last_seq,
                        now_us,
                        planned.queue_epoch,
                        json.dumps(dict(batch.operations)) if batch.operations else None,
                    ),
                ).rowcount
            self.positions.mark_planned(planned)
        return written

    def attach_customers(self) -> int:
        """Give planned batches of tenants provisioned since their tenant's Stripe customer;
        how many got one. A batch keeps the customer it was first given: a resend must carry
        the same parameters as the first send."""
        with sqlite.transaction(self._conn):
            waiting = self._conn.execute(
                f"SELECT DISTINCT tenant_id FROM billing_ledger WHERE {OPEN}"  # noqa: S608
                " AND state = 'planned' AND customer_id IS NULL"
            ).fetchall()
            customers = self._tenants.stripe_customers(row[0] for row in waiting)
            return sum(
                self._conn.execute(
                    f"UPDATE billing_ledger SET customer_id = ? WHERE {OPEN}"  # noqa: S608
                    " AND state = 'planned' AND customer_id IS NULL AND tenant_id = ?",
                    (customer_id, tenant_id),
                ).rowcount
                for tenant_id, customer_id in customers.items()
            )

    def sendable(
        self, queue: str, limit: int, *, skip_customers: Iterable[str] = ()
    ) -> list[LedgerBatch]:
        """Open batches of `queue` with a customer, oldest range and window first."""
        skip = sorted(set(skip_customers))
        marks = ", ".join("?" * len(skip))
        rows = self._conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM billing_ledger"  # noqa: S608
            f" WHERE {OPEN} AND queue = ? AND customer_id IS NOT NULL"
            f" AND customer_id NOT IN ({marks})"
            " ORDER BY first_seq, window_start, identifier LIMIT ?",
            (queue, *skip, limit),
        ).fetchall()
        return [LedgerBatch(*row) for row in rows]

    def open_batches(self, queue: str | None = None) -> list[LedgerBatch]:
        """Every batch planned or sent (of one queue, or all), oldest first."""
        rows = self._conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM billing_ledger WHERE {OPEN}"  # noqa: S608
            " AND (? IS NULL OR queue = ?) ORDER BY first_seq, window_start, identifier",
            (queue, queue),
        ).fetchall()
        return [LedgerBatch(*row) for row in rows]

    def get(self, identifier: str) -> LedgerBatch | None:
        row = self._conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM billing_ledger WHERE identifier = ?",  # noqa: S608
            (identifier,),
        ).fetchone()
        return LedgerBatch(*row) if row else None

    def mark_sent(self, identifier: str, now_us: int, stamp: Stamp) -> tuple[int, bool]:
        """Note an attempt before it is made: from the first one on, the outcome is unknown
        until an answer is recorded, and first_sent_at starts Stripe's dedup clock. The
        first attempt fixes the timestamp sent (`stamp`); later ones resend it.

        (attempt number, whether this attempt made the outcome unknown: the batch was
        `planned`); (0, False) when the batch is no longer open."""
        with sqlite.transaction(self._conn):
            row = self._conn.execute(
                "SELECT state, attempts FROM billing_ledger"
                " WHERE identifier = ? AND state IN ('planned', 'sent')",
                (identifier,),
            ).fetchone()
            if row is None:
                return 0, False
            self._conn.execute(
                "UPDATE billing_ledger SET state = 'sent', attempts = attempts + 1,"
                " first_sent_at = coalesce(first_sent_at, ?), stamp = coalesce(stamp, ?),"
                " placement = coalesce(placement, ?)"
                " WHERE identifier = ? AND state IN ('planned', 'sent')",
                (now_us, stamp.timestamp, stamp.placement, identifier),
            )
            return int(row[1]) + 1, row[0] == "planned"

    def unmark_sent(self, identifier: str, attempt: int) -> None:
        """Undo `mark_sent` of `attempt`, which made the outcome unknown and then failed in a
        way that proves Stripe recorded nothing: the batch is `planned` again, with no
        first_sent_at, so the failure does not count towards the unknown-outcome horizon.
        The attempt count stays (each attempt has an Idempotency-Key of its own); the stamp
        is chosen again by the next attempt."""
        self._update(
            "UPDATE billing_ledger SET state = 'planned', first_sent_at = NULL, stamp = NULL,"
            " placement = NULL WHERE identifier = ? AND state = 'sent' AND attempts = ?",
            (identifier, attempt),
        )

    def send_afresh(self, identifiers: Sequence[str]) -> None:
        """Stripe's summaries show these batches, sent with an unknown outcome, never landed:
        each is `planned` again under a fresh identifier (derived from its own and its
        attempts, so the same on every retry), its stamp chosen again when it is sent."""
        with sqlite.transaction(self._conn):
            for identifier in identifiers:
                self._conn.execute(
                    "UPDATE billing_ledger SET state = 'planned', first_sent_at = NULL,"
                    " stamp = NULL, placement = NULL, stripe_identifier = ?"
                    " WHERE identifier = ? AND state = 'sent'",
                    (fresh_identifier(self._conn, identifier), identifier),
                )

    def reported_by_stripe(self, errors: Sequence[tuple[str, str]]) -> list[LedgerBatch]:
        """Stripe dropped these meter events after accepting them (a meter error report):
        each (identifier Stripe holds it under, reason) moves its batch, confirmed or still
        open, to set_aside with the reason. The batches moved, as they were before."""
        moved: list[LedgerBatch] = []
        with sqlite.transaction(self._conn):
            for identifier, reason in errors:
                row = self._conn.execute(
                    f"SELECT {BATCH_COLUMNS} FROM billing_ledger"  # noqa: S608
                    " WHERE coalesce(stripe_identifier, identifier) = ?"
                    " AND state != 'set_aside'",
                    (identifier,),
                ).fetchone()
                if row is None:
                    continue
                batch = LedgerBatch(*row)
                self._conn.execute(
                    "UPDATE billing_ledger SET state = 'set_aside', set_aside_reason = ?"
                    " WHERE identifier = ?",
                    (reason, batch.identifier),
                )
                moved.append(batch)
        return moved

    def stamped_in(
        self, customer_id: str, event_name: str, start: int, end: int
    ) -> tuple[int, list[LedgerBatch]]:
        """What this node sent the customer's meter with stamps in [start, end): the units
        Stripe confirmed, and the batches whose outcome is unknown."""
        rows = self._conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM billing_ledger"  # noqa: S608
            " WHERE customer_id = ? AND event_name = ? AND stamp >= ? AND stamp < ?"
            " AND state IN ('sent', 'confirmed')",
            (customer_id, event_name, start, end),
        ).fetchall()
        batches = [LedgerBatch(*row) for row in rows]
        confirmed = sum(b.value for b in batches if b.state == "confirmed")
        return confirmed, [b for b in batches if b.state == "sent"]

    def confirm(self, identifier: str, now_us: int) -> None:
        """Stripe holds the batch (accepted now, or already had its identifier)."""
        self._update(
            "UPDATE billing_ledger SET state = 'confirmed', confirmed_at = ?"
            " WHERE identifier = ? AND state IN ('planned', 'sent')",
            (now_us, identifier),
        )

    def set_aside(self, batches: Sequence[tuple[str, str]]) -> None:
        """Set batches aside for good, each (identifier, reason): never sent again."""
        with sqlite.transaction(self._conn):
            self._conn.executemany(
                "UPDATE billing_ledger SET state = 'set_aside', set_aside_reason = ?"
                " WHERE identifier = ? AND state IN ('planned', 'sent')",
                [(reason, identifier) for identifier, reason in batches],
            )

    def clock_floor(self) -> float:
        """Unix seconds the horizon clock must not start below (sync/billing/clock.py): its
        persisted high-water mark, and the latest first send of a batch still open."""
        high_water = read_value(self._conn, HIGH_WATER)
        (first_sent,) = self._conn.execute(
            f"SELECT max(first_sent_at) FROM billing_ledger WHERE {OPEN}"  # noqa: S608
        ).fetchone()
        return max(float(high_water or 0.0), (first_sent or 0) / 1e6)

    def save_clock_high_water(self, seconds: float) -> None:
        """Persist the horizon clock's reading, so a restart does not start it lower."""
        with sqlite.transaction(self._conn):
            if seconds > float(read_value(self._conn, HIGH_WATER) or 0.0):
                write_value(self._conn, HIGH_WATER, repr(seconds))

    def _update(self, statement: str, parameters: tuple[object, ...]) -> None:
        with sqlite.transaction(self._conn):
            self._conn.execute(statement, parameters)


def fresh_identifier(conn: sqlite3.Connection, identifier: str) -> str:
    """A new meter event identifier for a batch sent afresh: derived from its own identifier
    and its attempts so far (each resend after an unknown outcome gets another)."""
    (attempts,) = conn.execute(
        "SELECT attempts FROM billing_ledger WHERE identifier = ?", (identifier,)
    ).fetchone()
    key = f"{identifier}\x1fafresh after {attempts}"
    return "en_" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def ledger_totals(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int | None, int | None]]:
    """Per state: batches, units, the oldest planned_at and the newest confirmed_at, on any
    connection to node.sqlite (the read-only one of `edge-node status` included)."""
    rows = conn.execute(
        "SELECT state, count(*), coalesce(sum(value), 0), min(planned_at), max(confirmed_at)"
        " FROM billing_ledger GROUP BY state"
    ).fetchall()
    return {str(row[0]): (int(row[1]), int(row[2]), row[3], row[4]) for row in rows}
