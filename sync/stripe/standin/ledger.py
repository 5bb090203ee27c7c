"""The stand-in's Stripe account: every object it holds, in memory, and its customers.

The other concepts keep their rules in their own modules and their objects here: prices,
products (sync/stripe/standin/pricing.py), meters and meter events (meters.py), test clocks
(clocks.py), subscriptions and their billing periods (billing_periods.py), invoices
(invoices.py), events (events.py). `time_of(customer)` is the time that drives a customer's
billing: its test clock's frozen time when it has one, else the stand-in's clock.

Customers: `email` is kept as given (an update to "" unsets it) and the list filters on it
exactly (case-sensitive, as Stripe's `email` filter); search takes `metadata['k']:'v'`
clauses joined by AND and, like Stripe's, may lag (the server's `search_lag` switch) or be
unavailable (`search_disabled`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sync.stripe.standin.clocks import TestClocks
from sync.stripe.standin.faults import StripeFault, no_such
from sync.stripe.standin.lists import newest_first

if TYPE_CHECKING:
    from sync.stripe.standin.events import EventLog
    from sync.stripe.standin.invoice_objects import Invoice
    from sync.stripe.standin.meters import UsageRecord
    from sync.stripe.standin.periods import Span

DEFAULT_FINALIZATION_GRACE_SECONDS = 3600
_SEARCH_CLAUSE = re.compile(r"\s*metadata\[['\"]([^'\"]+)['\"]\]\s*:\s*['\"]([^'\"]*)['\"]\s*")


@dataclass
class Settings:
    """Account settings Stripe keeps in its Dashboard rather than its API."""

    # Invoice settings, "Invoice finalization grace period": 1 hour by default, up to 72.
    finalization_grace_seconds: int = DEFAULT_FINALIZATION_GRACE_SECONDS

    def set_grace(self, seconds: int) -> None:
        if not 3600 <= seconds <= 72 * 3600:
            raise ValueError("finalization_grace_seconds must be between 3600 and 259200")
        self.finalization_grace_seconds = seconds


@dataclass
class Account:
    """Everything the stand-in's Stripe account holds; `now` is the stand-in's clock."""

    now: Callable[[], float]
    events: EventLog
    settings: Settings = field(default_factory=Settings)
    test_clocks: TestClocks = field(default_factory=TestClocks)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)  # metered usage stretches to invoice
    invoices: dict[str, Invoice] = field(default_factory=dict)
    identifiers: dict[str, float] = field(default_factory=dict)  # identifier -> recorded at
    indexed: dict[str, float] = field(default_factory=dict)  # customer -> created, stand-in clock
    meter_events: list[UsageRecord] = field(default_factory=list)
    invoice_numbers: int = 0

    def stamp(
        self, prefix: str, obj: dict[str, Any], created: float | None = None
    ) -> dict[str, Any]:
        obj.setdefault("id", f"{prefix}_{secrets.token_hex(12)}")
        obj.setdefault("created", int(self.now() if created is None else created))
        obj.setdefault("livemode", False)
        return obj

    def time_of(self, customer_id: str) -> int:
        """The time that drives this customer's billing: its test clock's, or the stand-in's."""
        clock_id = (self.customers.get(customer_id) or {}).get("test_clock")
        if clock_id and clock_id in self.test_clocks.clocks:
            return self.test_clocks.clocks[clock_id].frozen_time
        return int(self.now())

    # Customers.

    def create_customer(self, form: Mapping[str, Any]) -> dict[str, Any]:
        clock_id = form.get("test_clock")
        created = None
        if clock_id:
            created = self.test_clocks.get(str(clock_id), param="test_clock").frozen_time
        customer = self.stamp(
            "cus",
            {
                "object": "customer",
                "name": form.get("name"),
                "email": form.get("email") or None,
                "description": form.get("description"),
                "metadata": metadata(form),
                "test_clock": clock_id or None,
                "deleted": False,
            },
            created,
        )
        if clock_id:
            self.test_clocks.attach(str(clock_id), customer["id"])
        self.customers[customer["id"]] = customer
        self.indexed[customer["id"]] = self.now()
        self.events.emit("customer.created", customer, customer["created"])
        return customer

    def update_customer(self, customer_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/customers/{id}`: `name`, `email`, `description` (an empty value unsets
        it) and `metadata` (merged; an empty value removes a key); `customer.updated` with
        the changed fields' previous values."""
        customer = self.customer(customer_id)
        previous: dict[str, Any] = {}
        for name in ("name", "email", "description"):
            if name in form and (form[name] or None) != customer[name]:
                previous[name] = customer[name]
                customer[name] = form[name] or None
        if "metadata" in form:
            merged = {**customer["metadata"], **metadata(form)}
            merged = {k: v for k, v in merged.items() if v != ""}
            if merged != customer["metadata"]:
                previous["metadata"] = customer["metadata"]
                customer["metadata"] = merged
        if previous:
            self.events.emit("customer.updated", customer, self.now(), previous)
        return customer

    def customer(self, customer_id: str, param: str | None = None) -> dict[str, Any]:
        found = self.customers.get(customer_id)
        if found is None or found["deleted"]:
            raise no_such("customer", customer_id, param)
        return found

    def list_customers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Customers newest first, as Stripe lists them, filtered by `email` (exact),
        `test_clock` and `created[gte|gt|lte|lt]` (lists, unlike search, see every object
        at once)."""
        found = [c for c in self.customers.values() if not c["deleted"]]
        if "email" in query:
            found = [c for c in found if c["email"] == query["email"]]
        if "test_clock" in query:
            found = [c for c in found if c["test_clock"] == query["test_clock"]]
        found = [c for c in found if created_matches(c["created"], query.get("created"))]
        return newest_first(found, lambda c: c["created"])

    def search_customers(self, query: str) -> list[dict[str, Any]]:
        """Stripe's search syntax, the part used here: metadata['k']:'v' clauses with AND."""
        wanted: dict[str, str] = {}
        for clause in re.split(r"\s+AND\s+", query.strip()):
            match = _SEARCH_CLAUSE.fullmatch(clause)
            if match is None:
                raise StripeFault(400, f"Unsupported search query: {query!r}", param="query")
            wanted[match.group(1)] = match.group(2)
        return [
            c
            for c in self.customers.values()
            if not c["deleted"] and all(c["metadata"].get(k) == v for k, v in wanted.items())
        ]


def created_matches(created: int, bounds: Any) -> bool:
    """Stripe's `created` list filter: an exact value or a table of gt/gte/lt/lte."""
    if bounds is None:
        return True
    if not isinstance(bounds, dict):
        return created == int(bounds)
    checks: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda c, b: c > b,
        "gte": lambda c, b: c >= b,
        "lt": lambda c, b: c < b,
        "lte": lambda c, b: c <= b,
    }
    return all(checks[k](created, int(v)) for k, v in bounds.items() if k in checks)


def metadata(form: Mapping[str, Any]) -> dict[str, str]:
    found = form.get("metadata") or {}
    if not isinstance(found, dict):
        raise StripeFault(400, "Invalid metadata: must be a hash.", param="metadata")
    return {str(k): str(v) for k, v in found.items()}
