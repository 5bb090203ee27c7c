"""The Stripe client the adapter's parts share: one `StripeClient`, the current key, and
how a call or a create is made and its errors translated (sync/stripe/errors.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import stripe

from edge_node.errors import TransientSyncError
from sync.stripe.errors import raise_translated
from sync.stripe.idempotency import CreateKeys


class StripeClientBase:
    """The SDK client, its HTTP client and the Idempotency-Key generations of creates."""

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
        self._search_unavailable = False
        self._meter_ids: dict[str, str] = {}

    @property
    def collection_method(self) -> str:
        """How the subscriptions this gateway creates collect payment."""
        return self._collection_method

    async def close(self) -> None:
        """Close the HTTP client's connections (only a client this gateway made); once."""
        if self._owns_http_client and not self._closed:
            self._closed = True
            await cast(Any, self._http_client).close_async()

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
            raise_translated(exc, what)

    def _retire_failed_key(self, scope: str, what: str) -> None:
        """Called once a lookup found no object (sync/stripe/idempotency.py)."""
        self._keys.retire_if_failed(scope, what, now=self._clock())

    async def _call(self, pending: Any, what: str) -> Any:
        try:
            return await pending
        except stripe.StripeError as exc:
            raise_translated(exc, what)
