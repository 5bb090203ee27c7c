"""Products and prices in the stand-in: creating and listing them as Stripe does, and what a
quantity costs.

Prices: `lookup_key` is unique (a second price with it is refused unless it passes
`transfer_lookup_key=true`, which moves the key); `GET /v1/prices?lookup_keys[]=` takes up
to 10 keys and returns archived prices too unless `active=true`; `tiers` are returned only
with `expand[]=tiers`; a metered price must name a meter (API 2025-03-31 and later);
`recurring[interval]` is day, week, month or year with `interval_count` up to three years.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sync.stripe.standin.faults import StripeFault, missing, no_such
from sync.stripe.standin.ledger import Account, metadata
from sync.stripe.standin.lists import newest_first

MAX_LOOKUP_KEYS = 10
INTERVAL_DAYS = {"day": 1, "week": 7, "month": 31, "year": 366}


def price_amount(price: Mapping[str, Any], quantity: Decimal | int) -> int:
    """Cents for `quantity` units: per unit, or graduated / volume tiers; rounded half up."""
    if price["billing_scheme"] != "tiered":
        total = Decimal(price["unit_amount_decimal"]) * quantity
    elif price["tiers_mode"] == "volume":
        tier = next(t for t in price["tiers"] if t["up_to"] is None or quantity <= t["up_to"])
        total = Decimal(tier["unit_amount_decimal"]) * quantity + tier["flat_amount"]
    else:
        total, floor = Decimal(0), 0
        for tier in price["tiers"]:
            ceiling = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
            if ceiling > floor:
                total += Decimal(tier["unit_amount_decimal"]) * (ceiling - floor)
                total += tier["flat_amount"]
            if tier["up_to"] is None or quantity <= tier["up_to"]:
                break
            floor = tier["up_to"]
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def recurring(raw: Any, meters: Mapping[str, Any]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("interval") not in ("day", "week", "month", "year"):
        raise StripeFault(400, "Invalid recurring[interval].", param="recurring[interval]")
    usage_type = raw.get("usage_type", "licensed")
    meter = raw.get("meter")
    if usage_type == "metered":
        if not meter:
            raise StripeFault(
                400,
                "Starting with Stripe version `2025-03-31.basil`, metered prices must be "
                "backed by meters.",
                param="recurring[meter]",
            )
        if meter not in meters:
            raise no_such("billing meter", meter, param="recurring[meter]")
    count = int(number(raw.get("interval_count", "1"), "recurring[interval_count]"))
    if not 1 <= count * INTERVAL_DAYS[raw["interval"]] <= 3 * 366:
        raise StripeFault(
            400,
            "The maximum billing interval is 3 years (1095 days, 156 weeks or 36 months).",
            param="recurring[interval_count]",
        )
    return {
        "interval": raw["interval"],
        "interval_count": count,
        "usage_type": usage_type,
        "meter": meter,
        "trial_period_days": None,
    }


def tiers(raw: Any) -> list[dict[str, Any]]:
    tiers = []
    for index, tier in enumerate(as_list(raw or [])):
        if not isinstance(tier, dict) or "up_to" not in tier:
            raise StripeFault(400, "Each tier needs up_to.", param=f"tiers[{index}][up_to]")
        up_to = None if tier["up_to"] == "inf" else int(number(tier["up_to"], "up_to"))
        amount = tier.get("unit_amount_decimal", tier.get("unit_amount", "0"))
        flat = int(number(tier.get("flat_amount", "0"), "flat_amount"))
        tiers.append(
            {
                "up_to": up_to,
                "unit_amount": int(number(amount, "unit_amount")),
                "unit_amount_decimal": str(number(amount, "unit_amount")),
                "flat_amount": flat,
                "flat_amount_decimal": str(flat),
            }
        )
    if not tiers or tiers[-1]["up_to"] is not None:
        raise StripeFault(400, "The last tier must have up_to=inf.", param="tiers")
    return tiers


def number(value: Any, param: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise StripeFault(400, f"Invalid number for {param}: {value!r}", param=param) from None


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):  # a list given with gaps, e.g. items[1] alone
        return list(value.values())
    return [value]


# Products.


def create_product(account: Account, form: Mapping[str, Any]) -> dict[str, Any]:
    if not form.get("name"):
        raise missing("name")
    if form.get("id") in account.products:
        raise StripeFault(
            400,
            f"Product already exists with id {form['id']}.",
            code="resource_already_exists",
            param="id",
        )
    product = {"object": "product", "name": form["name"], "active": True}
    if form.get("id"):
        product["id"] = form["id"]
    product = account.stamp("prod", {**product, "metadata": metadata(form)})
    account.products[product["id"]] = product
    return product


def product(account: Account, product_id: str) -> dict[str, Any]:
    if product_id not in account.products:
        raise no_such("product", product_id)
    return account.products[product_id]


# Prices.


def create_price(account: Account, form: Mapping[str, Any]) -> dict[str, Any]:
    if not form.get("currency"):
        raise missing("currency")
    if not form.get("product"):
        raise missing("product")
    product(account, form["product"])
    price: dict[str, Any] = {
        "object": "price",
        "active": True,
        "currency": form["currency"],
        "product": form["product"],
        "lookup_key": _lookup_key(account, form),
        "nickname": form.get("nickname"),
        "metadata": metadata(form),
        "recurring": recurring(form.get("recurring"), account.meters),
        "billing_scheme": form.get("billing_scheme") or "per_unit",
        "tiers_mode": None,
        "tiers": None,
        "unit_amount": None,
        "unit_amount_decimal": None,
    }
    price["type"] = "recurring" if price["recurring"] else "one_time"
    _amounts(price, form)
    price = account.stamp("price", price)
    account.prices[price["id"]] = price
    return price


def _lookup_key(account: Account, form: Mapping[str, Any]) -> str | None:
    key = form.get("lookup_key") or None
    if key is None:
        return None
    if len(key) > 200:
        raise StripeFault(
            400, "Invalid lookup_key: must be at most 200 characters", param="lookup_key"
        )
    holder = next((p for p in account.prices.values() if p["lookup_key"] == key), None)
    if holder is not None:
        if form.get("transfer_lookup_key") != "true":
            raise StripeFault(
                400,
                f"A price (`{holder['id']}`) already uses that lookup key.",
                param="lookup_key",
            )
        holder["lookup_key"] = None
    return str(key)


def _amounts(price: dict[str, Any], form: Mapping[str, Any]) -> None:
    if price["billing_scheme"] == "tiered":
        price["tiers_mode"] = form.get("tiers_mode")
        if price["tiers_mode"] not in ("graduated", "volume"):
            raise StripeFault(400, "tiers_mode must be graduated or volume.", param="tiers_mode")
        price["tiers"] = tiers(form.get("tiers"))
        return
    amount = form.get("unit_amount_decimal", form.get("unit_amount"))
    if amount is None:
        raise missing("unit_amount")
    price["unit_amount_decimal"] = str(number(amount, "unit_amount"))
    if "unit_amount" in form:
        price["unit_amount"] = int(number(form["unit_amount"], "unit_amount"))


def price(account: Account, price_id: str, param: str | None = None) -> dict[str, Any]:
    if price_id not in account.prices:
        raise no_such("price", price_id, param)
    return account.prices[price_id]


def list_prices(account: Account, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Newest first; `lookup_keys` (at most 10), `active`, `product`, `type` filters."""
    prices = newest_first(account.prices.values(), lambda p: p["created"])
    if "lookup_keys" in query:
        keys = as_list(query["lookup_keys"])
        if len(keys) > MAX_LOOKUP_KEYS:
            raise StripeFault(
                400,
                f"You can pass at most {MAX_LOOKUP_KEYS} lookup_keys.",
                param="lookup_keys",
            )
        prices = [p for p in prices if p["lookup_key"] in set(keys)]
    if "active" in query:
        prices = [p for p in prices if p["active"] is (query["active"] == "true")]
    for name in ("product", "type"):
        if name in query:
            prices = [p for p in prices if p[name] == query[name]]
    return prices


def shown(price: Mapping[str, Any], expand: Any) -> dict[str, Any]:
    """A price as Stripe answers it: `tiers` only when `expand[]=tiers` (or
    `data.tiers` on a list) asked for them."""
    wanted = set(as_list(expand)) if expand else set()
    if price["tiers"] is None or wanted & {"tiers", "data.tiers"}:
        return dict(price)
    return {k: v for k, v in price.items() if k != "tiers"}
