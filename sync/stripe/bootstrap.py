"""The catalog in Stripe: the meter, the product and the plans' prices, found or created."""

from __future__ import annotations

import logging
from typing import Any, cast

import stripe

from edge_node.errors import TransientSyncError
from edge_node.tenants.model import PLANS, Plan
from sync.stripe.catalog import (
    PRODUCT_ID,
    BillingCatalog,
    included_event_name,
    price_mismatch,
    price_params,
)
from sync.stripe.client import StripeClientBase
from sync.stripe.errors import raise_translated

log = logging.getLogger(__name__)


class CatalogBootstrap(StripeClientBase):
    """`bootstrap` (`edge-node stripe bootstrap`) and the meter's id by event name."""

    # The catalog.

    async def bootstrap(self, *, meter_event_name: str) -> BillingCatalog:
        """Make sure the meter, the unpriced meter of flat-plan usage, the product and the
        three plans' prices exist; their ids. Running it again finds them (by event name,
        product id and lookup key): nothing new."""
        meter_id = await self._ensure_meter(meter_event_name)
        included_meter_id = await self._ensure_meter(included_event_name(meter_event_name))
        product_id = await self._ensure_product()
        price_ids = {
            plan: await self._ensure_price(plan, meter_id, meter_event_name, product_id)
            for plan in PLANS
        }
        return BillingCatalog(meter_id, meter_event_name, product_id, price_ids, included_meter_id)

    async def _ensure_meter(self, event_name: str) -> str:
        found = await self._find_meter(event_name)
        if found is not None:
            return found
        scope = f"meter:{event_name}"
        self._retire_failed_key(scope, f"billing meter {event_name}")
        meter = await self._create(
            scope,
            lambda options: self._client.v1.billing.meters.create_async(
                {
                    "display_name": f"edge-node requests ({event_name})",
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {
                        "type": "by_id",
                        "event_payload_key": "stripe_customer_id",
                    },
                    "value_settings": {"event_payload_key": "value"},
                },
                options,
            ),
            f"billing meter {event_name}",
        )
        return str(meter.id)

    async def _ensure_product(self) -> str:
        try:
            product = await self._client.v1.products.retrieve_async(
                PRODUCT_ID, None, self._options()
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise_translated(exc, f"product {PRODUCT_ID}")
        except stripe.StripeError as exc:
            raise_translated(exc, f"product {PRODUCT_ID}")
        else:
            return str(product.id)
        scope = f"product:{PRODUCT_ID}"
        self._retire_failed_key(scope, f"product {PRODUCT_ID}")
        product = await self._create(
            scope,
            lambda options: self._client.v1.products.create_async(
                {"id": PRODUCT_ID, "name": "edge-node API"}, options
            ),
            f"product {PRODUCT_ID}",
        )
        return str(product.id)

    async def _ensure_price(
        self, plan: Plan, meter_id: str, event_name: str, product_id: str
    ) -> str:
        """The plan's price: the active price holding its lookup key, checked to be that
        plan's price on this meter and product (sync/stripe/catalog.py `price_mismatch`).
        A key held by a price that does not fit (say, on a meter since replaced) is moved to
        a new price with `transfer_lookup_key`; the old price is left as it is."""
        lookup_key = f"edge_node_{plan}_{event_name}"
        found = await self._call(
            self._client.v1.prices.list_async(
                {"lookup_keys": [lookup_key], "active": True, "limit": 10}, self._options()
            ),
            f"price {lookup_key}",
        )
        holders = [p.to_dict() for p in found.data if p.lookup_key == lookup_key]
        reasons = []
        for holder in holders:
            reason = price_mismatch(holder, plan, meter_id, product_id, lookup_key)
            if reason is None:
                return str(holder["id"])
            reasons.append(f"{holder['id']}: {reason}")
        if reasons:
            log.warning(
                "the price holding lookup key %s is not plan %s's price (%s): a new price"
                " takes the key",
                lookup_key,
                plan,
                "; ".join(reasons),
            )
        scope = f"price:{lookup_key}:{meter_id}:{product_id}"
        if holders:  # a create of its own, whose key a lost answer's retry still shares
            scope += ":replacing:" + ",".join(sorted(str(h["id"]) for h in holders))
        self._retire_failed_key(scope, f"price {lookup_key}")
        params = price_params(plan, meter_id, product_id, lookup_key, transfer=bool(reasons))
        price = await self._create(
            scope,
            lambda options: self._client.v1.prices.create_async(cast(Any, params), options),
            f"price {lookup_key}",
        )
        return str(price.id)

    async def observed_invoice_grace(self) -> tuple[int, str] | None:
        """The account's invoice finalization grace as its draft invoices show it (Stripe has
        no API for the setting): `automatically_finalizes_at - created` of a subscription's
        period-end draft (the most common value among them), with the id of one such draft;
        None when the account has no such draft now."""
        listed = await self._call(
            self._client.v1.invoices.list_async({"status": "draft", "limit": 100}, self._options()),
            "draft invoices",
        )
        seen: dict[int, str] = {}
        counts: dict[int, int] = {}
        for invoice in listed.data:
            found = invoice.to_dict()
            finalizes, created = found.get("automatically_finalizes_at"), found.get("created")
            if found.get("billing_reason") != "subscription_cycle" or not finalizes or not created:
                continue
            grace = int(finalizes) - int(created)
            seen.setdefault(grace, str(found["id"]))
            counts[grace] = counts.get(grace, 0) + 1
        if not counts:
            return None
        grace = max(counts, key=lambda g: (counts[g], -g))
        return grace, seen[grace]

    async def _meter_id(self, event_name: str) -> str:
        if event_name not in self._meter_ids:
            found = await self._find_meter(event_name)
            if found is None:
                raise TransientSyncError(f"Stripe has no active meter for {event_name} yet")
            self._meter_ids[event_name] = found
        return self._meter_ids[event_name]

    async def _find_meter(self, event_name: str) -> str | None:
        """The id of the active meter for `event_name`, or None."""
        meters = await self._call(
            self._client.v1.billing.meters.list_async(
                {"status": "active", "limit": 100}, self._options()
            ),
            "billing meters",
        )
        try:
            async for meter in meters.auto_paging_iter():
                if meter.event_name == event_name:
                    return str(meter.id)
        except stripe.StripeError as exc:
            raise_translated(exc, "billing meters")
        return None
