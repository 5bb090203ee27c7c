"""A customer's billing periods as Stripe reports them: what decides where usage may be stamped.

Stripe puts a meter event into the period of the subscription that contains its
`timestamp`. The period lives on each subscription item (`current_period_start`,
`current_period_end`); the subscription's `start_date` is where its first period begins
(earlier when it was backdated). When a period ends Stripe creates its invoice as a draft and
finalizes it at the draft's `automatically_finalizes_at` (the period end plus the account's
grace); usage arriving after that for the ended period is accepted and never invoiced.

`SubscriptionPeriods` is read from the customer's live subscription and its draft invoices
(`StripeGateway.subscription_periods`); the billing flush decides each batch's timestamp from
it (sync/billing/periods.py). `InvoicedPeriod` is one of the customer's invoices and the units
it bills on the node's meter (`StripeGateway.invoiced_periods`), what reconcile sets against
the node's statement of that period (sync/billing/statements.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class OpenDraft:
    """A period that has ended but whose invoice is still a draft: usage stamped in
    [period_start, period_end) reaches it until `finalizes_at` (Unix seconds)."""

    period_start: int
    period_end: int
    finalizes_at: int


@dataclass(frozen=True, slots=True)
class SubscriptionPeriods:
    """The customer's live subscription: `start` (its start, backdated or not), the current
    period [period_start, period_end), and the ended periods whose invoices are drafts."""

    subscription_id: str
    start: int
    period_start: int
    period_end: int
    drafts: tuple[OpenDraft, ...] = ()

    def draft_for(self, timestamp: int) -> OpenDraft | None:
        """The draft invoice whose period holds `timestamp`, if there is one."""
        return next((d for d in self.drafts if d.period_start <= timestamp < d.period_end), None)


def periods_from(
    subscription: Mapping[str, Any], invoices: Iterable[Mapping[str, Any]]
) -> SubscriptionPeriods:
    """The periods of a subscription object and its draft invoices (as dicts, listed by
    `subscription` and `status=draft`)."""
    items = subscription["items"]["data"]
    period_start = min(int(item["current_period_start"]) for item in items)
    period_end = max(int(item["current_period_end"]) for item in items)
    drafts = tuple(
        OpenDraft(
            int(invoice["period_start"]),
            int(invoice["period_end"]),
            int(invoice["automatically_finalizes_at"]),
        )
        for invoice in invoices
        if invoice.get("status") == "draft"
        and invoice.get("automatically_finalizes_at")
        and int(invoice["period_end"]) <= period_start
    )
    return SubscriptionPeriods(
        str(subscription["id"]),
        int(subscription.get("start_date") or period_start),
        period_start,
        period_end,
        drafts,
    )


@dataclass(frozen=True, slots=True)
class InvoicedPeriod:
    """A customer's invoice for one subscription period [period_start, period_end): its id,
    status (`draft` until finalized), and `quantity`, the units of its lines priced on the
    node's meter (while a draft, what it would invoice now)."""

    invoice_id: str
    status: str
    period_start: int
    period_end: int
    quantity: int

    @property
    def final(self) -> bool:
        return self.status != "draft"


def invoiced_from(invoice: Mapping[str, Any], metered: Callable[[str], bool]) -> InvoicedPeriod:
    """An invoice object (as a dict) and the quantity of its lines whose price `metered`
    says is on the node's meter."""
    quantity = 0
    for line in invoice["lines"]["data"]:
        price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        if price is not None and metered(str(price)):
            quantity += int(Decimal(str(line.get("quantity_decimal") or line.get("quantity") or 0)))
    return InvoicedPeriod(
        str(invoice["id"]),
        str(invoice["status"]),
        int(invoice["period_start"]),
        int(invoice["period_end"]),
        quantity,
    )
