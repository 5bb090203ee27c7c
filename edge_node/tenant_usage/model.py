"""The usage answer: per billing period and operation, pending, sent, confirmed, invoiced.

    pending    served here and still at the edge: in a usage queue, or in the billing ledger
               not yet sent to Stripe
    sent       sent to Stripe, its answer not recorded yet
    confirmed  Stripe holds it (it reaches an invoice unless Stripe later reports it invalid)
    invoiced   confirmed, and the invoice of the period it was stamped into is final

Usage belongs to the period in which it was served. Usage carried forward (its own period's
invoice was final before it reached Stripe) stays under the period it was served in and is
invoiced with the later period's invoice. Units set aside (never to be billed) are in none
of the four. The tenant's allowance, if it has one, is added beside the periods
(edge_node.tenant_usage.allowance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Figure = Literal["pending", "sent", "confirmed", "invoiced"]
FIGURES: tuple[Figure, ...] = ("pending", "sent", "confirmed", "invoiced")
# open: the period is running; draft: ended, its invoice not final yet; final: its invoice
# is final; unknown: the node has not read the period from Stripe since it ended, or knows
# no period of the tenant at all (not provisioned in Stripe, or nothing billed yet).
InvoiceState = Literal["open", "draft", "final", "unknown"]


@dataclass
class PeriodUsage:
    """One billing period [start, end) (Unix seconds; None where the node does not know it)
    and its units by operation and figure."""

    start: int | None
    end: int | None
    invoice: InvoiceState
    operations: dict[str, dict[Figure, int]] = field(default_factory=dict)

    def add(self, operation: str, figure: Figure, units: int) -> None:
        figures = self.operations.setdefault(operation, dict.fromkeys(FIGURES, 0))
        figures[figure] += units

    def holds(self, seconds: float) -> bool:
        """Whether usage served at `seconds` belongs to this period."""
        return (self.start is None or seconds >= self.start) and (
            self.end is None or seconds < self.end
        )

    def to_json(self) -> dict[str, Any]:
        totals = dict.fromkeys(FIGURES, 0)
        for figures in self.operations.values():
            for name, units in figures.items():
                totals[name] += units
        return {
            "start": _time(self.start),
            "end": _time(self.end),
            "invoice": self.invoice,
            "operations": {name: dict(self.operations[name]) for name in sorted(self.operations)},
            "total": totals,
        }


@dataclass
class TenantUsage:
    """The answer: the tenant's current period and the one before (None when unknown)."""

    tenant_id: str
    as_of: float
    current: PeriodUsage
    previous: PeriodUsage | None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "as_of": _time(int(self.as_of)),
            "unit": "units",
            "current_period": self.current.to_json(),
            "previous_period": None if self.previous is None else self.previous.to_json(),
        }


class UsageSource(Protocol):
    """Where the answer is read from, on the node alone, as of its own clock: it never waits
    on the network. It may read files (the caller runs it off the event loop) and raises
    OSError, sqlite3.Error or edge_node.queue.QueueError when they cannot be read."""

    def usage(self, tenant_id: str) -> TenantUsage: ...


def _time(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
