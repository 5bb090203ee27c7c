"""Reconcile's statement per tenant and billing period: where the usage served in the period
stands, and what Stripe's invoice for the period holds against it.

The periods are the ones the node knows (edge_node/tenants/billing_periods.py) and those of the
customer's invoices, read through the Stripe adapter when reconcile is given them; usage
served outside every one of them (before the subscription, or a tenant without one) is one
more statement with no bounds. Usage belongs to the period its window starts in. In units:

    served = queued + sent + confirmed + set_aside + difference
    confirmed = billed in this period + carried_forward (stamped into a later period)
                + included (a flat-plan tenant's usage, on the meter no price bills)
    invoiced = confirmed - carried_forward - included + carried_in + stripe_difference

`queued` is at the edge (on a queue, or planned into the ledger and not sent), `carried_in`
the usage of earlier periods the node stamped into this one, `invoiced` the units of the
period's invoice on the node's meter (0 while the period has no invoice; null when Stripe was
not read). Served is counted per UTC day where requests are served (edge_node/usage/served.py):
a period is given the usage billing recorded in it, plus what a day served beyond what billing
recorded of that day, in the period where the day starts.

A statement is unexplained when `difference` is positive (served, and no record of it), or
when Stripe's invoice holds less than the node says it confirmed into the period (usage Stripe
dropped, or that never reached it). More on the invoice than the node sent is shown, not
counted against it: other nodes may bill the same customer.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.stripe.periods import InvoicedPeriod

Bounds = tuple[int | None, int | None]
OUTSIDE: Bounds = (None, None)


@dataclass
class PeriodStatement:
    """One tenant's usage served in one period [start, end), in units."""

    tenant_id: str
    start: int | None
    end: int | None
    invoice: InvoicedPeriod | None = None
    stripe_read: bool = False
    served: int = 0
    queued: int = 0
    sent: int = 0
    confirmed: int = 0
    carried_forward: int = 0
    carried_in: int = 0
    included: int = 0
    set_aside: int = 0

    @property
    def recorded(self) -> int:
        return self.queued + self.sent + self.confirmed + self.set_aside

    @property
    def difference(self) -> int:
        return self.served - self.recorded

    @property
    def invoiced(self) -> int | None:
        if not self.stripe_read:
            return None
        return 0 if self.invoice is None else self.invoice.quantity

    @property
    def stripe_difference(self) -> int | None:
        """Invoiced less what the node confirmed into the period; None without an invoice."""
        if self.invoice is None:
            return None
        billed = self.confirmed - self.carried_forward - self.included + self.carried_in
        return self.invoice.quantity - billed

    @property
    def unexplained(self) -> int:
        """Units no part of the statement accounts for."""
        missing = max(0, self.difference)
        if self.stripe_difference is not None:
            missing += max(0, -self.stripe_difference)
        return missing

    def to_json(self) -> dict[str, Any]:
        invoice = self.invoice
        return {
            "tenant_id": self.tenant_id,
            "period": {"start": _time(self.start), "end": _time(self.end)},
            "invoice": None
            if invoice is None
            else {"id": invoice.invoice_id, "status": invoice.status},
            "served": self.served,
            "queued": self.queued,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "invoiced": self.invoiced,
            "carried_forward": self.carried_forward,
            "carried_in": self.carried_in,
            "included_in_flat_fee": self.included,
            "set_aside": self.set_aside,
            "difference": self.difference,
            "stripe_difference": self.stripe_difference,
            "unexplained": self.unexplained,
        }


@dataclass
class PeriodStatements:
    """The statements of every tenant, its periods known from `bounds` (per tenant)."""

    bounds: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    invoices: Mapping[str, list[InvoicedPeriod]] = field(default_factory=dict)
    statements: dict[tuple[str, Bounds], PeriodStatement] = field(default_factory=dict)
    read_stripe: bool = False

    @classmethod
    def of(
        cls,
        known: Iterable[tuple[str, int, int]],
        invoices: Mapping[str, list[InvoicedPeriod]] | None,
    ) -> PeriodStatements:
        """From the known periods (tenant, start, end) and, when Stripe was read, the
        invoices of each tenant billed through it."""
        spans: dict[str, dict[int, int]] = {}
        for tenant, start, end in known:
            spans.setdefault(tenant, {})[start] = end
        for tenant, found in (invoices or {}).items():
            for invoice in found:
                spans.setdefault(tenant, {})[invoice.period_start] = invoice.period_end
        bounds = {tenant: _disjoint(sorted(by_start.items())) for tenant, by_start in spans.items()}
        made = cls(bounds, invoices or {}, read_stripe=invoices is not None)
        if invoices is not None:
            for tenant, found in invoices.items():
                for invoice in found:
                    statement = made.at(tenant, invoice.period_start)
                    if statement.start == invoice.period_start:
                        statement.invoice = invoice
        return made

    def bounds_of(self, tenant_id: str, seconds: float) -> Bounds:
        spans = self.bounds.get(tenant_id, [])
        at = bisect.bisect_right(spans, (seconds, float("inf"))) - 1
        if at >= 0 and spans[at][0] <= seconds < spans[at][1]:
            return spans[at]
        return OUTSIDE

    def at(self, tenant_id: str, seconds: float) -> PeriodStatement:
        """The statement of the tenant's period holding `seconds`."""
        bounds = self.bounds_of(tenant_id, seconds)
        key = (tenant_id, bounds)
        if key not in self.statements:
            self.statements[key] = PeriodStatement(
                tenant_id, *bounds, stripe_read=self.read_stripe and tenant_id in self.invoices
            )
        return self.statements[key]

    def add_batch(
        self,
        tenant_id: str,
        window_start: int,
        units: int,
        *,
        state: str,
        placement: str,
        stamp: int | None,
    ) -> None:
        """A ledger batch (or batches of one window alike) into its period's statement."""
        statement = self.at(tenant_id, window_start)
        if state == "planned":
            statement.queued += units
        elif state == "sent":
            statement.sent += units
        elif state == "set_aside":
            statement.set_aside += units
        else:
            statement.confirmed += units
            if placement == "included":
                statement.included += units
            elif placement != "own" and stamp is not None:
                statement.carried_forward += units
                self.at(tenant_id, stamp).carried_in += units

    def add_queued(self, tenant_id: str, seconds: float, units: int) -> None:
        self.at(tenant_id, seconds).queued += units

    def add_served(self, tenant_id: str, day_start: int, units: int) -> None:
        """Served beyond what billing recorded, on the UTC day starting at `day_start`."""
        self.at(tenant_id, day_start).served += units

    def settle_served(self) -> None:
        """Give each statement the usage billing recorded in it as served (call once, after
        every batch and queued record, before `add_served`)."""
        for statement in self.statements.values():
            statement.served += statement.recorded

    def sorted(self) -> list[PeriodStatement]:
        return sorted(
            self.statements.values(), key=lambda s: (s.tenant_id, s.start is not None, s.start or 0)
        )


def _disjoint(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans sorted by start, each kept only where it does not overlap the one before."""
    kept: list[tuple[int, int]] = []
    for start, end in spans:
        if end > start and (not kept or start >= kept[-1][1]):
            kept.append((start, end))
    return kept


def _time(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
