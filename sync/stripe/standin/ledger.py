"""The stand-in's Stripe account: customers, products, prices, meters, subscriptions, meter
events and invoice previews, in memory, with the rules Stripe documents for them.

Meter events: an `identifier` already recorded within the dedup window (24 h of the stand-in's
clock) is refused with the duplicate answer; a timestamp older than 35 days or more than 5
minutes ahead is refused; the customer must exist. Accepted values are counted per customer:
`billed` is what a real account would invoice. Concurrency (one call per customer and meter)
and idempotency are the server's business (sync/stripe/standin/server.py).
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.stripe.standin import pricing
from sync.stripe.standin.faults import StripeFault, duplicate_identifier, missing, no_such

DAY = 86_400
DEDUP_WINDOW_SECONDS = DAY
PAST_LIMIT_SECONDS = 35 * DAY
FUTURE_LIMIT_SECONDS = 300
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
_SEARCH_CLAUSE = re.compile(r"\s*metadata\[['\"]([^'\"]+)['\"]\]\s*:\s*['\"]([^'\"]*)['\"]\s*")


@dataclass
class Account:
    """Everything the stand-in's Stripe account holds; `now` is the stand-in's clock."""

    now: Callable[[], float]
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    identifiers: dict[str, float] = field(default_factory=dict)  # identifier -> recorded at
    meter_events: list[dict[str, Any]] = field(default_factory=list)
    billed: Counter[str] = field(default_factory=Counter)  # customer -> value accepted
    usage: Counter[tuple[str, str]] = field(default_factory=Counter)  # (customer, event name)

    def _stamp(self, prefix: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("id", f"{prefix}_{secrets.token_hex(8)}")
        obj.setdefault("created", int(self.now()))
        obj.setdefault("livemode", False)
        return obj

    # Customers.

    def create_customer(self, form: Mapping[str, Any]) -> dict[str, Any]:
        customer = self._stamp(
            "cus",
            {
                "object": "customer",
                "name": form.get("name"),
                "email": form.get("email"),
                "metadata": _metadata(form),
            },
        )
        self.customers[customer["id"]] = customer
        return customer

    def customer(self, customer_id: str) -> dict[str, Any]:
        if customer_id not in self.customers:
            raise no_such("customer", customer_id)
        return self.customers[customer_id]

    def list_customers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Customers newest first, as Stripe lists them, filtered by `created[gte]`/`[lte]`
        (lists, unlike search, see every object at once)."""
        created = query.get("created")
        low, high = (
            (created.get("gte"), created.get("lte")) if isinstance(created, dict) else (None, None)
        )
        return sorted(
            (
                c
                for c in self.customers.values()
                if (low is None or c["created"] >= int(low))
                and (high is None or c["created"] <= int(high))
            ),
            key=lambda c: (c["created"], c["id"]),
            reverse=True,
        )

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
            if all(c["metadata"].get(k) == v for k, v in wanted.items())
        ]

    # Catalog.

    def create_product(self, form: Mapping[str, Any]) -> dict[str, Any]:
        if not form.get("name"):
            raise missing("name")
        if form.get("id") in self.products:
            raise StripeFault(
                400,
                f"Product already exists with id {form['id']}.",
                code="resource_already_exists",
                param="id",
            )
        product = {"object": "product", "name": form["name"], "active": True}
        if form.get("id"):
            product["id"] = form["id"]
        product = self._stamp("prod", {**product, "metadata": _metadata(form)})
        self.products[product["id"]] = product
        return product

    def product(self, product_id: str) -> dict[str, Any]:
        if product_id not in self.products:
            raise no_such("product", product_id)
        return self.products[product_id]

    def create_meter(self, form: Mapping[str, Any]) -> dict[str, Any]:
        for name in ("display_name", "event_name", "default_aggregation"):
            if not form.get(name):
                raise missing(name)
        formula = form["default_aggregation"].get("formula")
        if formula not in ("sum", "count", "last"):
            raise StripeFault(400, "Invalid default_aggregation[formula].", param="formula")
        event_name = form["event_name"]
        if any(m["event_name"] == event_name for m in self.active_meters()):
            raise StripeFault(
                400,
                f"An active meter with event_name {event_name} already exists.",
                code="resource_already_exists",
                param="event_name",
            )
        meter = self._stamp(
            "mtr",
            {
                "object": "billing.meter",
                "display_name": form["display_name"],
                "event_name": event_name,
                "status": "active",
                "default_aggregation": {"formula": formula},
                "customer_mapping": form.get("customer_mapping")
                or {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                "value_settings": form.get("value_settings") or {"event_payload_key": "value"},
            },
        )
        self.meters[meter["id"]] = meter
        return meter

    def active_meters(self) -> list[dict[str, Any]]:
        return [m for m in self.meters.values() if m["status"] == "active"]

    def create_price(self, form: Mapping[str, Any]) -> dict[str, Any]:
        if not form.get("currency"):
            raise missing("currency")
        if not form.get("product"):
            raise missing("product")
        self.product(form["product"])
        recurring = pricing.recurring(form.get("recurring"), self.meters)
        lookup_key = form.get("lookup_key")
        if lookup_key and any(p.get("lookup_key") == lookup_key for p in self.prices.values()):
            raise StripeFault(
                400,
                f"A price with lookup key {lookup_key} already exists.",
                code="lookup_key_already_exists",
                param="lookup_key",
            )
        price: dict[str, Any] = {
            "object": "price",
            "active": True,
            "currency": form["currency"],
            "product": form["product"],
            "lookup_key": lookup_key,
            "nickname": form.get("nickname"),
            "metadata": _metadata(form),
            "recurring": recurring,
            "type": "recurring" if recurring else "one_time",
            "billing_scheme": form.get("billing_scheme") or "per_unit",
            "tiers_mode": None,
            "tiers": None,
            "unit_amount": None,
            "unit_amount_decimal": None,
        }
        if price["billing_scheme"] == "tiered":
            price["tiers_mode"] = form.get("tiers_mode")
            if price["tiers_mode"] not in ("graduated", "volume"):
                raise StripeFault(
                    400, "tiers_mode must be graduated or volume.", param="tiers_mode"
                )
            price["tiers"] = pricing.tiers(form.get("tiers"))
        else:
            amount = form.get("unit_amount_decimal", form.get("unit_amount"))
            if amount is None:
                raise missing("unit_amount")
            price["unit_amount_decimal"] = str(pricing.number(amount, "unit_amount"))
            if "unit_amount" in form:
                price["unit_amount"] = int(pricing.number(form["unit_amount"], "unit_amount"))
        price = self._stamp("price", price)
        self.prices[price["id"]] = price
        return price

    def list_prices(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        prices: Iterable[dict[str, Any]] = self.prices.values()
        if "lookup_keys" in query:
            keys = set(pricing.as_list(query["lookup_keys"]))
            prices = [p for p in prices if p.get("lookup_key") in keys]
        if "active" in query:
            active = query["active"] == "true"
            prices = [p for p in prices if p["active"] is active]
        return list(prices)

    # Subscriptions.

    def create_subscription(self, form: Mapping[str, Any]) -> dict[str, Any]:
        if not form.get("customer"):
            raise missing("customer")
        if form["customer"] not in self.customers:
            raise no_such("customer", form["customer"], param="customer")
        items = pricing.as_list(form.get("items") or [])
        if not items:
            raise missing("items")
        method = form.get("collection_method", "charge_automatically")
        if method == "send_invoice" and not form.get("days_until_due"):
            raise missing("days_until_due")
        subscription = self._stamp(
            "sub",
            {
                "object": "subscription",
                "customer": form["customer"],
                "status": "active",
                "collection_method": method,
                "metadata": _metadata(form),
            },
        )
        data = []
        for index, item in enumerate(items):
            price_id = item.get("price") if isinstance(item, dict) else None
            if not price_id or price_id not in self.prices:
                raise no_such("price", str(price_id), param=f"items[{index}][price]")
            data.append(
                self._stamp(
                    "si",
                    {
                        "object": "subscription_item",
                        "price": self.prices[price_id],
                        "quantity": None
                        if self.prices[price_id]["recurring"]["usage_type"] == "metered"
                        else int(item.get("quantity", 1)),
                        "subscription": subscription["id"],
                    },
                )
            )
        subscription["items"] = {"object": "list", "data": data, "has_more": False}
        self.subscriptions[subscription["id"]] = subscription
        return subscription

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        if subscription_id not in self.subscriptions:
            raise no_such("subscription", subscription_id)
        return self.subscriptions[subscription_id]

    def list_subscriptions(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        status = query.get("status", "active")
        return [
            s
            for s in self.subscriptions.values()
            if ("customer" not in query or s["customer"] == query["customer"])
            and (status == "all" or s["status"] == status)
        ]

    # Usage.

    def record_meter_event(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and count one meter event (the identifier window is checked here)."""
        event_name, customer_id, value = meter_event_subject(form)
        now = self.now()
        identifier = form.get("identifier") or f"standin_{secrets.token_hex(12)}"
        timestamp = int(pricing.number(form.get("timestamp", int(now)), "timestamp"))
        if timestamp < now - PAST_LIMIT_SECONDS:
            raise StripeFault(
                400,
                "Timestamp must be within the past 35 calendar days.",
                param="timestamp",
            )
        if timestamp > now + FUTURE_LIMIT_SECONDS:
            raise StripeFault(
                400, "Timestamp must not be more than 5 minutes in the future.", param="timestamp"
            )
        if customer_id not in self.customers:
            raise no_such("customer", customer_id, param="payload[stripe_customer_id]")
        recorded_at = self.identifiers.get(identifier)
        if recorded_at is not None and now - recorded_at < DEDUP_WINDOW_SECONDS:
            raise duplicate_identifier(identifier)
        self.identifiers[identifier] = now
        self.billed[customer_id] += value
        self.usage[(customer_id, event_name)] += value
        event = {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": {k: str(v) for k, v in form["payload"].items()},
            "timestamp": timestamp,
        }
        self.meter_events.append(event)
        return event

    def invoice_preview(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """The upcoming invoice: every live subscription item of the customer, metered ones
        priced on all the usage recorded for their meter."""
        customer_id = form.get("customer")
        if form.get("subscription"):
            subscriptions = [self.subscription(form["subscription"])]
            customer_id = subscriptions[0]["customer"]
        elif customer_id:
            self.customer(customer_id)
            subscriptions = [
                s
                for s in self.subscriptions.values()
                if s["customer"] == customer_id and s["status"] in LIVE_STATUSES
            ]
        else:
            raise missing("customer")
        lines = [
            self._invoice_line(customer_id, item)
            for subscription in subscriptions
            for item in subscription["items"]["data"]
        ]
        total = sum(line["amount"] for line in lines)
        return {
            "object": "invoice",
            "id": None,
            "customer": customer_id,
            "currency": "usd",
            "lines": {"object": "list", "data": lines, "has_more": False},
            "subtotal": total,
            "total": total,
            "amount_due": total,
            "livemode": False,
        }

    def _invoice_line(self, customer_id: str, item: dict[str, Any]) -> dict[str, Any]:
        price = item["price"]
        recurring = price["recurring"] or {}
        if recurring.get("usage_type") == "metered":
            event_name = self.meters[recurring["meter"]]["event_name"]
            quantity = self.usage[(customer_id, event_name)]
        else:
            quantity = item["quantity"] or 1
        return {
            "object": "line_item",
            "amount": pricing.price_amount(price, quantity),
            "quantity": quantity,
            "price": price,
            "subscription_item": item["id"],
        }

    def accepted_meter_events(self) -> list[tuple[str, str, int]]:
        """(identifier, customer, value) of every meter event accepted, oldest first."""
        return [
            (e["identifier"], e["payload"]["stripe_customer_id"], int(e["payload"]["value"]))
            for e in self.meter_events
        ]

    def dump(self) -> dict[str, Any]:
        return {
            "customers": list(self.customers.values()),
            "products": list(self.products.values()),
            "prices": list(self.prices.values()),
            "meters": list(self.meters.values()),
            "subscriptions": list(self.subscriptions.values()),
            "meter_events": len(self.meter_events),
            "billed": dict(self.billed),
        }


def meter_event_subject(form: Mapping[str, Any]) -> tuple[str, str, int]:
    """(event name, customer, value) of a meter event request, or the fault it deserves."""
    if not form.get("event_name"):
        raise missing("event_name")
    payload = form.get("payload")
    if not isinstance(payload, dict):
        raise missing("payload")
    customer_id = payload.get("stripe_customer_id")
    if not customer_id:
        raise missing("payload[stripe_customer_id]")
    try:
        value = int(payload.get("value", ""))
    except ValueError:
        raise StripeFault(
            400, "payload[value] must be an integer.", param="payload[value]"
        ) from None
    return str(form["event_name"]), str(customer_id), value


def _metadata(form: Mapping[str, Any]) -> dict[str, str]:
    metadata = form.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise StripeFault(400, "Invalid metadata: must be a hash.", param="metadata")
    return {str(k): str(v) for k, v in metadata.items()}
