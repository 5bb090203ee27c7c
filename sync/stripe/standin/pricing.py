"""Prices in the stand-in: checking `recurring` and `tiers`, and what a quantity costs."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sync.stripe.standin.faults import StripeFault, no_such


def price_amount(price: Mapping[str, Any], quantity: int) -> int:
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
                400, "Metered prices must be backed by a meter.", param="recurring[meter]"
            )
        if meter not in meters:
            raise no_such("billing meter", meter, param="recurring[meter]")
    return {"interval": raw["interval"], "usage_type": usage_type, "meter": meter}


def tiers(raw: Any) -> list[dict[str, Any]]:
    tiers = []
    for index, tier in enumerate(as_list(raw or [])):
        if not isinstance(tier, dict) or "up_to" not in tier:
            raise StripeFault(400, "Each tier needs up_to.", param=f"tiers[{index}][up_to]")
        up_to = None if tier["up_to"] == "inf" else int(number(tier["up_to"], "up_to"))
        amount = tier.get("unit_amount_decimal", tier.get("unit_amount", "0"))
        tiers.append(
            {
                "up_to": up_to,
                "unit_amount_decimal": str(number(amount, "unit_amount")),
                "flat_amount": int(number(tier.get("flat_amount", "0"), "flat_amount")),
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
