"""A billing ledger row as it is read: a meter-event batch and where it stands.

What the send rules judge and the sender sends (sync/billing/send_rules.py, send.py); the
table, its migrations and its SQL are the ledger's (sync/billing/ledger.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sync.billing.periods import Placement

BatchState = Literal["planned", "sent", "confirmed", "set_aside"]
# The columns a LedgerBatch is read from, in the order of its fields.
BATCH_COLUMNS = (
    "identifier, tenant_id, customer_id, event_name, window_start, value, events, queue,"
    " first_seq, last_seq, state, attempts, planned_at, first_sent_at, confirmed_at,"
    " set_aside_reason, stamp, placement, stripe_identifier"
)


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """A ledger row: a batch and where it stands."""

    identifier: str
    tenant_id: str
    customer_id: str | None
    event_name: str
    window_start: int
    value: int
    events: int
    queue: str
    first_seq: int
    last_seq: int
    state: BatchState
    attempts: int
    planned_at: int
    first_sent_at: int | None
    confirmed_at: int | None
    set_aside_reason: str | None
    stamp: int | None = None  # the timestamp sent (sync/billing/periods.py), once sent
    placement: Placement | None = None
    stripe_identifier: str | None = None  # None: Stripe holds it under `identifier`

    @property
    def sent_identifier(self) -> str:
        """The meter event identifier Stripe knows this batch by."""
        return self.stripe_identifier or self.identifier
