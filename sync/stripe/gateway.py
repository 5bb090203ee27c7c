"""The Stripe adapter: with its parts (`client`, `errors`, `bootstrap`, `periods`) the only
code that imports `stripe`; it speaks edge-node's errors.

Every call goes through the official SDK's async methods (`*_async`) on a `StripeClient`
whose base addresses, HTTP client and `max_network_retries` are set here (0 by default: the
sync worker's own loop decides when to retry, with backoff and jitter). Stripe's exceptions
are translated into edge_node.errors (sync/stripe/errors.py):

    connection error, timeout, 429, 409, 5xx, 401, 403  -> TransientSyncError (retry_after)
      of which a refused connection, 429, 401, 403         -> not_received=True (Stripe
                                                              cannot have recorded it)
    400 / 404 (invalid_request_error, idempotency_error) -> PermanentSyncError (code)
    a meter event whose identifier Stripe already has    -> MeterEventOutcome.DUPLICATE

401 and 403 are transient on purpose: the data is fine, the key is not, and a rotated key
(read through `api_key` before every call) lets the same batch through.

Every create carries an Idempotency-Key derived from what it creates (the tenant, the meter
event identifier, the plan), so a retry after a lost answer gets the first answer back
instead of a second object; lookups by metadata, lookup key or product id cover the time
after Stripe has pruned the key (24 hours). Stripe also replays a 500 saved for a key, so
the keys of provisioning and catalog creates have generations (sync/stripe/idempotency.py): after
a 5xx the object is looked up again, consistently (a customer by a list of the customers
created since, which unlike search sees new ones at once), and only when it is absent does
the next create use a new key.

Where Stripe offers no customer search (it answers 404), customers are found by listing them.
Billing periods and meter event summaries are read for the usage flush (sync/billing/).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from enum import Enum
from typing import Any, cast

import stripe

from edge_node.errors import TransientSyncError
from sync.stripe.bootstrap import CatalogBootstrap
from sync.stripe.errors import is_duplicate_identifier, raise_translated
from sync.stripe.meter_errors import MeterErrorReport, report_from
from sync.stripe.periods import (
    InvoicedPeriod,
    SubscriptionPeriods,
    invoiced_from,
    periods_from,
)

log = logging.getLogger(__name__)

LIVE_SUBSCRIPTION_STATUSES = frozenset(
    {"active", "trialing", "past_due", "unpaid", "incomplete", "paused"}
)
# Customers created this long before a failed create are listed when looking for the one it
# may have made anyway (covers clock differences between the node and Stripe).
CREATED_LOOKBACK_SECONDS = 3600.0


class MeterEventOutcome(Enum):
    """What became of a meter event: both mean Stripe holds it exactly once."""

    ACCEPTED = "accepted"  # recorded now (or an Idempotency-Key replay of that answer)
    DUPLICATE = "duplicate"  # Stripe already had this identifier: recorded by an earlier try


class StripeGateway(CatalogBootstrap):
    """Stripe, as the sync worker and the CLI need it: meter events, customers,
    subscriptions, periods and the catalog. One per process; `close()` it when done."""

    # Usage.

    async def send_meter_event(
        self,
        *,
        event_name: str,
        customer_id: str,
        value: int,
        timestamp: int,
        identifier: str,
        attempt: int,
    ) -> MeterEventOutcome:
        """Record `value` units for `customer_id` at `timestamp` (Unix seconds), once per
        `identifier`. The Idempotency-Key carries `attempt` (the ledger's attempt number), so
        each attempt is a request of its own: Stripe replays an answer for a key, a 500
        included, so a key shared by all attempts would repeat a 500 for 24 hours. The
        identifier still deduplicates across attempts: a resend after a lost answer is
        DUPLICATE (or ACCEPTED, as a key replay within the same attempt)."""
        params: dict[str, Any] = {
            "event_name": event_name,
            "identifier": identifier,
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        }
        try:
            await self._client.v1.billing.meter_events.create_async(
                cast(Any, params), self._options(f"edge-node:meter-event:{identifier}:{attempt}")
            )
        except stripe.InvalidRequestError as exc:
            if is_duplicate_identifier(exc):
                return MeterEventOutcome.DUPLICATE
            raise_translated(exc, f"meter event {identifier}")
        except stripe.StripeError as exc:
            raise_translated(exc, f"meter event {identifier}")
        return MeterEventOutcome.ACCEPTED

    async def subscription_periods(self, customer_id: str) -> SubscriptionPeriods | None:
        """The customer's live subscription's periods and the drafts of its ended periods
        (sync/stripe/periods.py); None when the customer has no live subscription."""
        listed = await self._call(
            self._client.v1.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": 100}, self._options()
            ),
            f"subscriptions of customer {customer_id}",
        )
        live = [s.to_dict() for s in listed.data if s.status in LIVE_SUBSCRIPTION_STATUSES]
        if not live:
            return None
        subscription = min(live, key=lambda s: (s["created"], s["id"]))
        drafts = await self._call(
            self._client.v1.invoices.list_async(
                {"subscription": subscription["id"], "status": "draft", "limit": 100},
                self._options(),
            ),
            f"draft invoices of subscription {subscription['id']}",
        )
        return periods_from(subscription, [invoice.to_dict() for invoice in drafts.data])

    async def invoiced_periods(self, customer_id: str, event_name: str) -> list[InvoicedPeriod]:
        """The customer's invoices for subscription periods (the first 100, newest first;
        not the zero-length invoice of a subscription's creation), each with the units of its
        lines priced on the meter of `event_name`."""
        meter_id = await self._meter_id(event_name)
        listed = await self._call(
            self._client.v1.invoices.list_async(
                {"customer": customer_id, "limit": 100}, self._options()
            ),
            f"invoices of customer {customer_id}",
        )
        invoices = [i.to_dict() for i in listed.data if i.period_end > i.period_start]
        prices = {
            str(line["pricing"]["price_details"]["price"])
            for invoice in invoices
            for line in invoice["lines"]["data"]
            if (line.get("pricing") or {}).get("price_details")
        }
        metered = set()
        for price_id in sorted(prices):
            price = await self._call(
                self._client.v1.prices.retrieve_async(price_id, None, self._options()),
                f"price {price_id}",
            )
            recurring = price.to_dict().get("recurring") or {}
            if recurring.get("meter") == meter_id:
                metered.add(price_id)
        try:
            return [invoiced_from(invoice, metered.__contains__) for invoice in invoices]
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise TransientSyncError(
                f"Stripe invoices of customer {customer_id}: an answer the node does not"
                f" understand ({exc})"
            ) from exc

    async def meter_event_total(
        self, *, event_name: str, customer_id: str, start: int, end: int
    ) -> float:
        """What the meter of `event_name` holds for the customer with timestamps in
        [start, end) (minute boundaries), from Stripe's meter event summaries."""
        meter_id = await self._meter_id(event_name)
        summaries = await self._call(
            self._client.v1.billing.meters.event_summaries.list_async(
                meter_id,
                {"customer": customer_id, "start_time": start, "end_time": end, "limit": 1},
                self._options(),
            ),
            f"meter event summaries of customer {customer_id}",
        )
        try:
            return sum(float(summary.aggregated_value) for summary in summaries.data)
        except (AttributeError, TypeError, ValueError) as exc:
            raise TransientSyncError(
                f"Stripe meter event summaries of customer {customer_id}: an answer the node"
                f" does not understand ({exc})"
            ) from exc

    async def meter_error_report(self, event_id: str) -> MeterErrorReport:
        """The meter error report of a thin event (`GET /v2/core/events/{id}`); a report
        the node cannot read is a transient error, never taken as nothing dropped."""
        event = await self._call(
            self._client.v2.core.events.retrieve_async(event_id, None, self._options()),
            f"event {event_id}",
        )
        try:
            return report_from(event.to_dict())
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise TransientSyncError(
                f"Stripe event {event_id}: a meter error report the node does not understand"
                f" ({exc})"
            ) from exc

    # Provisioning.

    async def ensure_customer(
        self,
        *,
        tenant_id: str,
        name: str,
        created_after: float | None = None,
        email: str | None = None,
    ) -> str:
        """The id of the tenant's Stripe customer, created when there is none. Found by
        metadata tenant_id (search, or where Stripe offers no search a list of the
        customers, since `created_after` when the tenant's creation is known: its customer
        cannot be older); created with an Idempotency-Key derived from the tenant, so two
        attempts racing or retrying within 24 hours still make one customer."""
        found = await self._find_customer(tenant_id, created_after)
        if found is not None:
            return found
        scope, what = f"customer:{tenant_id}", f"customer for tenant {tenant_id}"
        failed = self._keys.failed_at(scope)
        if failed is not None:
            # Search lags behind creates; a list does not. The failed create may have made it.
            listed = await self._customer_created_since(tenant_id, failed)
            if listed is not None:
                return listed
            self._retire_failed_key(scope, what)
        params: dict[str, Any] = {"name": name, "metadata": {"tenant_id": tenant_id}}
        if email is not None:
            params["email"] = email
        customer = await self._create(
            scope,
            lambda options: self._client.v1.customers.create_async(cast(Any, params), options),
            what,
        )
        return str(customer.id)

    async def customer_email(self, customer_id: str) -> str | None:
        """The email Stripe has for the customer (None: none)."""
        customer = await self._call(
            self._client.v1.customers.retrieve_async(customer_id, None, self._options()),
            f"customer {customer_id}",
        )
        email = customer.to_dict().get("email")
        return str(email) if email else None

    async def set_customer_email(self, customer_id: str, email: str) -> None:
        """Give the customer `email` (`POST /v1/customers/{id}`: an update, safe to repeat)."""
        await self._call(
            self._client.v1.customers.update_async(customer_id, {"email": email}, self._options()),
            f"email of customer {customer_id}",
        )

    async def _find_customer(self, tenant_id: str, created_after: float | None) -> str | None:
        """The tenant's customer by metadata: by search, or by listing every customer where
        the account has no search (Stripe answers 404: some regions offer none)."""
        if not self._search_unavailable:
            try:
                found = await self._client.v1.customers.search_async(
                    {"query": f"metadata['tenant_id']:'{tenant_id}'", "limit": 10},
                    self._options(),
                )
            except stripe.InvalidRequestError as exc:
                if exc.http_status != 404:
                    raise_translated(exc, f"customer search for tenant {tenant_id}")
                log.warning("Stripe offers no customer search here: customers are listed")
                self._search_unavailable = True
            except stripe.StripeError as exc:
                raise_translated(exc, f"customer search for tenant {tenant_id}")
            else:
                if not found.data:
                    return None
                return str(min(found.data, key=lambda c: (c.created, c.id)).id)
        return await self._customer_created_since(tenant_id, created_after)

    async def _customer_created_since(self, tenant_id: str, since: float | None) -> str | None:
        """The tenant's customer among those created since `since` (less a margin; None:
        all), found by listing them (consistent, unlike search), oldest first."""
        params: dict[str, Any] = {"limit": 100}
        if since is not None:
            params["created"] = {"gte": int(since - CREATED_LOOKBACK_SECONDS)}
        listed = await self._call(
            self._client.v1.customers.list_async(cast(Any, params), self._options()),
            f"customers created since a failed create for tenant {tenant_id}",
        )
        found: list[Any] = []
        try:
            async for customer in listed.auto_paging_iter():
                if (customer.to_dict().get("metadata") or {}).get("tenant_id") == tenant_id:
                    found.append(customer)
        except stripe.StripeError as exc:
            raise_translated(exc, f"customers of tenant {tenant_id}")
        return str(min(found, key=lambda c: (c.created, c.id)).id) if found else None

    async def ensure_subscription(
        self, *, tenant_id: str, customer_id: str, price_ids: Sequence[str]
    ) -> str:
        """The id of the tenant's live subscription, created on `price_ids` when it has
        none. An existing live subscription of the tenant is kept whatever its prices."""
        existing = await self._call(
            self._client.v1.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": 100}, self._options()
            ),
            f"subscriptions of customer {customer_id}",
        )
        for subscription in existing.data:
            found = subscription.to_dict()
            if (
                found.get("status") in LIVE_SUBSCRIPTION_STATUSES
                and (found.get("metadata") or {}).get("tenant_id") == tenant_id
            ):
                return str(found["id"])
        prices = sorted(price_ids)
        digest = hashlib.sha256("\n".join(prices).encode()).hexdigest()[:16]
        params: dict[str, Any] = {
            "customer": customer_id,
            "items": [{"price": price} for price in prices],
            "metadata": {"tenant_id": tenant_id},
            "collection_method": self._collection_method,
        }
        if self._collection_method == "send_invoice":
            params["days_until_due"] = self._days_until_due
        scope, what = f"subscription:{tenant_id}:{digest}", f"subscription for tenant {tenant_id}"
        self._retire_failed_key(scope, what)  # the list above is consistent
        subscription = await self._create(
            scope,
            lambda options: self._client.v1.subscriptions.create_async(cast(Any, params), options),
            what,
        )
        return str(subscription.id)
