"""The Stripe billing catalog: the meter, product and per-plan prices `stripe bootstrap` made.

Plain data, no Stripe import: the daemon reads the catalog file to know which price a new
tenant's subscription gets, and the CLI writes it. The file is JSON, written atomically
(temporary file, fsync, rename), so a crash never leaves half a catalog behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edge_node.errors import ConfigError
from edge_node.tenants.model import PLANS, Plan

FILE_NAME = "stripe-catalog.json"
PRODUCT_ID = "edge_node_api"
CURRENCY = "usd"

# What the three plans cost, in cents: bootstrap creates these prices once. An operator who
# wants other prices creates them in Stripe and writes their ids into the catalog file.
PAYG_UNIT_AMOUNT_DECIMAL = "0.1"  # 0.1 cent per billed unit
TIERED_TIERS: tuple[tuple[int | None, str], ...] = (  # (up to, cents per unit), graduated
    (10_000, "0.1"),
    (1_000_000, "0.05"),
    (None, "0.02"),
)
FLAT_MONTHLY_AMOUNT = 4900  # 49.00 a month
# Usage of flat-plan tenants goes to a meter of its own that no price bills: Stripe holds
# it (its summaries show it) and no invoice charges it; reconcile reports it as included in
# the flat fee, never as billed.
INCLUDED_SUFFIX = "_included"


def included_event_name(event_name: str) -> str:
    """The event name of the unpriced meter beside the meter of `event_name`."""
    return event_name + INCLUDED_SUFFIX


@dataclass(frozen=True)
class BillingCatalog:
    """Stripe ids of the billing meter, the product and one recurring price per plan."""

    meter_id: str
    meter_event_name: str
    product_id: str
    price_ids: Mapping[Plan, str]
    included_meter_id: str = ""  # the unpriced meter; "" in a catalog written before it

    @property
    def included_event_name(self) -> str:
        return included_event_name(self.meter_event_name)

    def price_for(self, plan: Plan) -> str:
        return self.price_ids[plan]

    def to_json(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "meter_event_name": self.meter_event_name,
            "product_id": self.product_id,
            "price_ids": {plan: self.price_ids[plan] for plan in PLANS},
            "included_meter_id": self.included_meter_id,
        }

    @classmethod
    def from_json(cls, document: Any, source: str = "the catalog") -> BillingCatalog:
        try:
            prices = document["price_ids"]
            catalog = cls(
                meter_id=str(document["meter_id"]),
                meter_event_name=str(document["meter_event_name"]),
                product_id=str(document["product_id"]),
                price_ids={plan: str(prices[plan]) for plan in PLANS},
                included_meter_id=str(document.get("included_meter_id", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{source} is not a Stripe catalog (missing {exc}); run `edge-node stripe"
                " bootstrap` to write it"
            ) from None
        return catalog


def catalog_path(data_dir: Path, configured: str = "") -> Path:
    """Where the catalog lives: stripe.catalog_file, or stripe-catalog.json in data_dir."""
    return Path(configured) if configured else data_dir / FILE_NAME


def load_catalog(path: Path) -> BillingCatalog | None:
    """The catalog in `path`; None when the file does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the Stripe catalog {path}: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"the Stripe catalog {path} is not valid JSON: {exc}") from None
    return BillingCatalog.from_json(document, str(path))


def save_catalog(path: Path, catalog: BillingCatalog) -> None:
    """Write the catalog atomically: readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(orjson.dumps(catalog.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def price_mismatch(
    price: Mapping[str, Any], plan: Plan, meter_id: str, product_id: str, lookup_key: str
) -> str | None:
    """Why a price Stripe listed is not `plan`'s price on this meter and product (None: it
    is). A list by `lookup_keys` is checked, never trusted: the key may have been moved to
    a price on an older meter, another product or another currency."""
    recurring = price.get("recurring") or {}
    wanted_usage = "licensed" if plan == "flat" else "metered"
    checks = (
        (price.get("lookup_key") == lookup_key, f"its lookup key is {price.get('lookup_key')!r}"),
        (price.get("active") is True, "it is archived"),
        (price.get("product") == product_id, f"it is a price of product {price.get('product')}"),
        (price.get("currency") == CURRENCY, f"its currency is {price.get('currency')}"),
        (recurring.get("usage_type") == wanted_usage, f"it is not {wanted_usage}"),
        (
            plan == "flat" or recurring.get("meter") == meter_id,
            f"it bills meter {recurring.get('meter')}, not {meter_id}",
        ),
    )
    return next((reason for fits, reason in checks if not fits), None)


def price_params(
    plan: Plan, meter_id: str, product_id: str, lookup_key: str, *, transfer: bool = False
) -> dict[str, Any]:
    """The parameters of the create of `plan`'s price (bootstrap, sync/stripe/bootstrap.py);
    `transfer` moves the lookup key from the price that holds it (Stripe's
    `transfer_lookup_key`)."""
    params: dict[str, Any] = {
        "currency": CURRENCY,
        "product": product_id,
        "lookup_key": lookup_key,
        "nickname": f"edge-node {plan}",
        "metadata": {"edge_node_plan": plan},
    }
    if transfer:
        params["transfer_lookup_key"] = True
    if plan == "flat":
        params["unit_amount"] = FLAT_MONTHLY_AMOUNT
        params["recurring"] = {"interval": "month", "usage_type": "licensed"}
        return params
    params["recurring"] = {"interval": "month", "usage_type": "metered", "meter": meter_id}
    if plan == "payg":
        params["unit_amount_decimal"] = PAYG_UNIT_AMOUNT_DECIMAL
        return params
    params["billing_scheme"] = "tiered"
    params["tiers_mode"] = "graduated"
    params["tiers"] = [
        {"up_to": "inf" if up_to is None else up_to, "unit_amount_decimal": amount}
        for up_to, amount in TIERED_TIERS
    ]
    return params
