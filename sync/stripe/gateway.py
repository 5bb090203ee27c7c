"""The Stripe adapter: the only module that imports `stripe`; it speaks edge-node's errors.

Every call goes through the official SDK's async methods (`*_async`) on a `StripeClient`
whose base addresses, HTTP client and `max_network_retries` are set here (0 by default: the
sync worker's own loop decides when to retry, with backoff and jitter). Stripe's exceptions
are translated into edge_node.errors:

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
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, NoReturn, cast

import aiohttp
import stripe

from edge_node.errors import PermanentSyncError, SyncError, TransientSyncError
from edge_node.tenants.model import PLANS, Plan
from sync.stripe.catalog import (
    PRODUCT_ID,
    BillingCatalog,
    price_params,
)
from sync.stripe.idempotency import CreateKeys

log = logging.getLogger(__name__)

# Stripe answers a meter event whose identifier it has already recorded with a 400
# invalid_request_error, "An event already exists with identifier ...". The code is not in
# Stripe's published list, so the message is matched as well as the codes seen for it.
DUPLICATE_CODES = frozenset({"resource_already_exists", "billing_meter_event_duplicate"})
DUPLICATE_MESSAGE = "already exists with identifier"
# Answers that prove Stripe recorded nothing: rate limited, or the key was not accepted.
NOT_RECEIVED_STATUSES = frozenset({401, 403, 429})
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


class StripeGateway:
    """Stripe, as the sync worker and the CLI need it: meter events, customers,
    subscriptions and the catalog. One per process; `close()` it when done."""

    def __init__(
        self,
        api_key: Callable[[], str],
        *,
        api_base: str | None = None,
        meter_events_base: str | None = None,
        max_network_retries: int = 0,
        http_client: object | None = None,
        timeout_seconds: float = 20,
        collection_method: str = "send_invoice",
        days_until_due: int = 30,
        create_keys: CreateKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_key = api_key
        self._keys = create_keys or CreateKeys()
        self._clock = clock
        self._owns_http_client = http_client is None
        self._closed = False
        if http_client is None:
            http_client = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout_seconds))
        if not isinstance(http_client, stripe.HTTPClient):
            raise TypeError(f"http_client must be a stripe.HTTPClient, got {http_client!r}")
        self._http_client = http_client
        addresses: dict[str, str] = {}
        if api_base:
            addresses["api"] = api_base
        if meter_events_base:
            addresses["meter_events"] = meter_events_base
        # The client's own key is a placeholder: every call passes the current key.
        self._client = stripe.StripeClient(
            "sk_placeholder",
            base_addresses=cast(Any, addresses),
            max_network_retries=max_network_retries,
            http_client=http_client,
        )
        self._collection_method = collection_method
        self._days_until_due = days_until_due

    async def close(self) -> None:
        """Close the HTTP client's connections (only a client this gateway made); once."""
        if self._owns_http_client and not self._closed:
            self._closed = True
            await cast(Any, self._http_client).close_async()

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
            if _is_duplicate_identifier(exc):
                return MeterEventOutcome.DUPLICATE
            _raise_translated(exc, f"meter event {identifier}")
        except stripe.StripeError as exc:
            _raise_translated(exc, f"meter event {identifier}")
        return MeterEventOutcome.ACCEPTED

    # Provisioning.

    async def ensure_customer(self, *, tenant_id: str, name: str) -> str:
        """The id of the tenant's Stripe customer, created when there is none. Found by
        metadata tenant_id; created with an Idempotency-Key derived from the tenant, so two
        attempts racing or retrying within 24 hours still make one customer."""
        found = await self._call(
            self._client.v1.customers.search_async(
                {"query": f"metadata['tenant_id']:'{tenant_id}'", "limit": 10},
                self._options(),
            ),
            f"customer search for tenant {tenant_id}",
        )
        if found.data:
            return str(min(found.data, key=lambda c: (c.created, c.id)).id)
        scope, what = f"customer:{tenant_id}", f"customer for tenant {tenant_id}"
        failed = self._keys.failed_at(scope)
        if failed is not None:
            # Search lags behind creates; a list does not. The failed create may have made it.
            listed = await self._customer_created_since(tenant_id, failed)
            if listed is not None:
                return listed
            self._retire_failed_key(scope, what)
        customer = await self._create(
            scope,
            lambda options: self._client.v1.customers.create_async(
                {"name": name, "metadata": {"tenant_id": tenant_id}}, options
            ),
            what,
        )
        return str(customer.id)

    async def _customer_created_since(self, tenant_id: str, since: float) -> str | None:
        """The tenant's customer among those created since `since` (less a margin), found by
        listing them (consistent, unlike search), oldest first."""
        listed = await self._call(
            self._client.v1.customers.list_async(
                {"created": {"gte": int(since - CREATED_LOOKBACK_SECONDS)}, "limit": 100},
                self._options(),
            ),
            f"customers created since a failed create for tenant {tenant_id}",
        )
        found: list[Any] = []
        try:
            async for customer in listed.auto_paging_iter():
                if (customer.to_dict().get("metadata") or {}).get("tenant_id") == tenant_id:
                    found.append(customer)
        except stripe.StripeError as exc:
            _raise_translated(exc, f"customers of tenant {tenant_id}")
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

    # The catalog.

    async def bootstrap(self, *, meter_event_name: str) -> BillingCatalog:
        """Make sure the meter, the product and the three plans' prices exist; their ids.
        Running it again finds them (by event name, product id and lookup key): nothing new."""
        meter_id = await self._ensure_meter(meter_event_name)
        product_id = await self._ensure_product()
        price_ids = {
            plan: await self._ensure_price(plan, meter_id, meter_event_name, product_id)
            for plan in PLANS
        }
        return BillingCatalog(meter_id, meter_event_name, product_id, price_ids)

    async def _ensure_meter(self, event_name: str) -> str:
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
            _raise_translated(exc, "billing meters")
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
                _raise_translated(exc, f"product {PRODUCT_ID}")
        except stripe.StripeError as exc:
            _raise_translated(exc, f"product {PRODUCT_ID}")
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
        lookup_key = f"edge_node_{plan}_{event_name}"
        found = await self._call(
            self._client.v1.prices.list_async(
                {"lookup_keys": [lookup_key], "active": True, "limit": 10}, self._options()
            ),
            f"price {lookup_key}",
        )
        if found.data:
            return str(found.data[0].id)
        scope = f"price:{lookup_key}"
        self._retire_failed_key(scope, f"price {lookup_key}")
        params = price_params(plan, meter_id, product_id, lookup_key)
        price = await self._create(
            scope,
            lambda options: self._client.v1.prices.create_async(cast(Any, params), options),
            f"price {lookup_key}",
        )
        return str(price.id)

    # Plumbing.

    def _options(self, idempotency_key: str | None = None) -> stripe.RequestOptions:
        try:
            api_key = self._api_key()
        except OSError as exc:
            raise TransientSyncError(f"cannot read the Stripe API key: {exc}") from exc
        options: stripe.RequestOptions = {"api_key": api_key}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        return options

    async def _create(
        self, scope: str, make: Callable[[stripe.RequestOptions], Any], what: str
    ) -> Any:
        """A create under the scope's current Idempotency-Key; a 5xx is recorded against the
        key (Stripe saves it and would replay it for 24 hours)."""
        try:
            return await make(self._options(self._keys.key(scope)))
        except stripe.StripeError as exc:
            if exc.http_status is not None and exc.http_status >= 500:
                self._keys.record_failure(scope, self._clock())
            _raise_translated(exc, what)

    def _retire_failed_key(self, scope: str, what: str) -> None:
        """Called once a lookup found no object (sync/stripe/idempotency.py)."""
        self._keys.retire_if_failed(scope, what, now=self._clock())

    async def _call(self, pending: Any, what: str) -> Any:
        try:
            return await pending
        except stripe.StripeError as exc:
            _raise_translated(exc, what)


def _is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    message = (exc.user_message or "").lower()
    return DUPLICATE_MESSAGE in message or (
        exc.code in DUPLICATE_CODES and getattr(exc, "param", None) in (None, "identifier")
    )


def _raise_translated(exc: stripe.StripeError, what: str) -> NoReturn:
    raise translate(exc, what) from exc


def translate(exc: stripe.StripeError, what: str = "") -> SyncError:
    """Our error for a Stripe SDK error: transient (retry, with Stripe's hint) or permanent."""
    prefix = f"Stripe {what}: " if what else "Stripe: "
    status = exc.http_status
    code = _error_code(exc)
    detail = f"{prefix}{exc.user_message or type(exc).__name__}"
    if status is not None:
        detail += f" (HTTP {status}, {code or _error_type(exc)})"
    if isinstance(exc, stripe.APIConnectionError) or status is None:
        cause = exc.__cause__ or exc
        return TransientSyncError(
            f"{prefix}cannot reach Stripe ({type(cause).__name__})",
            not_received=_never_connected(exc),
        )
    if status in (401, 403, 409, 429) or status >= 500:
        return TransientSyncError(
            detail, retry_after=_retry_after(exc), not_received=status in NOT_RECEIVED_STATUSES
        )
    return PermanentSyncError(detail, code=code)


def _never_connected(exc: BaseException) -> bool:
    """Whether the cause chain shows the connection was never made (refused, no route, DNS,
    TLS handshake): no byte of the request reached Stripe."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _error_code(exc: stripe.StripeError) -> str | None:
    """Stripe's `error.code` (RateLimitError and others keep it only in the body)."""
    if exc.code:
        return exc.code
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code) if code else None
    return None


def _error_type(exc: stripe.StripeError) -> str:
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type") or "error")
    return "error"


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
