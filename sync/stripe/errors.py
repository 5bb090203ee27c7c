"""Stripe's errors as edge-node's: the SDK's exceptions translated for the sync worker.

    connection error, timeout, 429, 409, 5xx, 401, 403  -> TransientSyncError (retry_after)
      of which a refused connection, 429, 401, 403         -> not_received=True (Stripe
                                                              cannot have recorded it)
    400 / 404 (invalid_request_error, idempotency_error) -> PermanentSyncError (code)

Part of the adapter (sync/stripe/gateway.py), which raises nothing else.
"""

from __future__ import annotations

from typing import NoReturn

import aiohttp
import stripe

from edge_node.errors import PermanentSyncError, SyncError, TransientSyncError

# Stripe answers a meter event whose identifier it has already recorded with a 400
# invalid_request_error, "An event already exists with identifier ...". The code is not in
# Stripe's published list, so the message is matched as well as the codes seen for it.
DUPLICATE_CODES = frozenset({"resource_already_exists", "billing_meter_event_duplicate"})
DUPLICATE_MESSAGE = "already exists with identifier"
# Answers that prove Stripe recorded nothing: rate limited, or the key was not accepted.
NOT_RECEIVED_STATUSES = frozenset({401, 403, 429})


def is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    message = (exc.user_message or "").lower()
    return DUPLICATE_MESSAGE in message or (
        exc.code in DUPLICATE_CODES and getattr(exc, "param", None) in (None, "identifier")
    )


def raise_translated(exc: stripe.StripeError, what: str) -> NoReturn:
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
