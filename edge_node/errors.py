"""The edge node's exception tree, and how each error reads as RFC 9457 problem+json.

    EdgeNodeError                  anything this project raises on purpose
    +-- ConfigError                bad configuration: the operator must fix it, exit non-zero
    +-- Problem                    an answer to an HTTP client (RFC 9457), status + stable type
    |   +-- BadRequest             400: malformed JSON, invalid fields, bad ids or cursors,
    |   |                          a forged or stale webhook signature
    |   +-- Unauthorized           401: no credential, unknown, revoked, forged or expired
    |   +-- PaymentRequired        402: subscription canceled, or past due beyond the grace
    |   +-- Forbidden              403: wrong tenant, wrong role, suspended tenant
    |   +-- NotFound               404: no such route or resource
    |   +-- MethodNotAllowed       405
    |   +-- RequestTimeout         408: the body did not arrive in time (a slow client)
    |   +-- PayloadTooLarge        413: body over the configured limit
    |   +-- UriTooLong             414: request line or query string over the limit
    |   +-- UnsupportedMediaType   415: body is not application/json
    |   +-- RateLimited            429: the tenant's token bucket is empty
    |   |   +-- QuotaExhausted     429: the tenant's `block` allowance for the period is used
    |   |   +-- CreditsExhausted   429: the API key's credits are spent
    |   +-- HeadersTooLarge        431: a header, all headers, or their number over the limit
    |   +-- ServiceUnavailable     503: storage not ready
    |       +-- StorageUnavailable 503: the disk is full (or below the free-space floor),
    |                              read-only, failing, or a file is damaged; retry later
    +-- RegistryError              tenant registry misuse from the CLI (unknown tenant or key)
    +-- KeyMaterialError           master key or data-key store unusable (edge_node.crypto.keystore)
    +-- CommentUnreadable          a sealed comment cannot be opened here (edge_node.crypto.sealing)
    +-- NotAUsageEvent             a queue record that is not a usage event (edge_node.usage.event)
    +-- SchemaTooNew               a file a newer release migrated in a way this one cannot read
    +-- BackupError                a backup that cannot be written, or one refused for restore
    |   +-- DataDirectoryInUse     restore refused: a daemon serves the data directory
    +-- SyncError                  the central PostgreSQL (sync/postgres.py) or Stripe
        |                          (sync/stripe/gateway.py) failed an operation
        +-- TransientSyncError     retry later: unreachable, reset, timeout, serialization
        |                          failure, too many connections, server shutting down,
        |                          Stripe 429/5xx/401 (carries Stripe's retry-after hint)
        +-- PermanentSyncError     set the batch aside and report it: the server rejected the
                                   data itself (constraint violation, invalid value, a Stripe
                                   invalid_request_error: carries Stripe's error code)

Each Problem carries a `type` URI that never changes once published, so clients can
branch on it; `docs/api.md` ("Errors") lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROBLEM_TYPE_BASE = "urn:edge-node:problem:"


class EdgeNodeError(Exception):
    """Base of every error edge-node raises on purpose."""


class ConfigError(EdgeNodeError):
    """The configuration is invalid; the message tells the operator what to change."""


class RegistryError(EdgeNodeError):
    """A registry operation named a tenant or key that does not exist."""


class BackupError(EdgeNodeError):
    """`backup` could not write a complete backup, or `restore` refused one (the message says
    why: a file whose checksum differs, a target that exists, a running daemon)."""


class DataDirectoryInUse(BackupError):
    """A daemon holds the data directory that restore was to replace: stop it first."""


class SyncError(EdgeNodeError):
    """An operation on the central PostgreSQL or Stripe failed; the subclass says whether to
    retry."""


class TransientSyncError(SyncError):
    """Retrying later may succeed: nothing is wrong with the data being synced.

    `retry_after` is the server's hint in seconds (Stripe's Retry-After), None without one.
    `not_received` is True when the failure proves the server recorded nothing (the
    connection was refused before the request was sent, or it answered 429, 401 or 403);
    False when the outcome is unknown (a timeout, a connection lost after sending, a 5xx)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, not_received: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.not_received = not_received


class PermanentSyncError(SyncError):
    """The server rejected the data itself: retrying the same batch fails the same way.

    `code` is the server's stable error code when it gave one (Stripe's `error.code`)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Problem(EdgeNodeError):
    """An error answered to an HTTP client as an RFC 9457 problem document."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if slug is not None:
            self.slug = slug
        if title is not None:
            self.title = title
        self.headers: Mapping[str, str] = headers or {}
        self.errors = list(errors) if errors else []

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug

    def to_document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body: type, title, status, detail, and extension members."""
        document: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            document["instance"] = instance
        if self.errors:
            document["errors"] = self.errors
        return document


class BadRequest(Problem):
    status = 400
    slug = "invalid-request"
    title = "The request is invalid"


class Unauthorized(Problem):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid credential"


class PaymentRequired(Problem):
    status = 402
    slug = "payment-required"
    title = "Payment required"


class Forbidden(Problem):
    status = 403
    slug = "forbidden"
    title = "The credential does not allow this"


class NotFound(Problem):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(Problem):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class PayloadTooLarge(Problem):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(Problem):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class RateLimited(Problem):
    status = 429
    slug = "rate-limited"
    title = "Rate limit exceeded"


class QuotaExhausted(RateLimited):
    slug = "quota-exhausted"
    title = "Usage quota exhausted"


class CreditsExhausted(RateLimited):
    slug = "credits-exhausted"
    title = "API key credits exhausted"


class ServiceUnavailable(Problem):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class StorageUnavailable(ServiceUnavailable):
    """Local storage cannot take (or give) what the request needs: nothing was done, or, for
    `usage-pending`, the write was done and its usage event is queued but not yet durable."""

    slug = "storage-unavailable"
    title = "Storage unavailable"
    retry_after_seconds = 5

    def __init__(self, detail: str, *, slug: str | None = None) -> None:
        super().__init__(detail, slug=slug, headers={"Retry-After": str(self.retry_after_seconds)})


class QuotaUnavailable(ServiceUnavailable):
    """This node's lease of a tenant's fleet-wide allowance is spent, and no other can be had
    just now (the central database is out of reach, or a renewal is on its way): nothing was
    done. Not `quota-exhausted`: the fleet may have units left."""

    slug = "quota-unavailable"
    title = "Usage quota unavailable"


class RequestTimeout(Problem):
    status = 408
    slug = "request-timeout"
    title = "The request did not arrive in time"


class UriTooLong(Problem):
    status = 414
    slug = "uri-too-long"
    title = "Request line too long"


class HeadersTooLarge(Problem):
    status = 431
    slug = "headers-too-large"
    title = "Request headers too large"


def field_error(field: str, message: str) -> dict[str, str]:
    """One entry of a problem's `errors` list: which field, and what is wrong with it."""
    return {"field": field, "message": message}


class KeyMaterialError(EdgeNodeError):
    """A master key or the data-key store cannot be used: wrong key, unreadable file, or a
    key store wrapped by another master key than the one configured."""


class CommentUnreadable(EdgeNodeError):
    """A sealed comment cannot be opened here: its data key is gone (shredded, or not yet
    synced to this node) or it fails authentication (moved to another row, or altered)."""


class NotAUsageEvent(EdgeNodeError):
    """A queue record's payload is not a usage event (not JSON, a field missing, unknown or of
    the wrong type); the message says which. Billing bills such a record as nothing."""


class SchemaTooNew(EdgeNodeError):
    """A database file was migrated by a newer release that recorded that releases knowing
    fewer migrations than it (this one) cannot use it: refused, never misread."""

    def __init__(self, path: str, component: str | None, known: int, needed: int) -> None:
        part = f"its {component} tables" if component else "it"
        super().__init__(
            f"{path} was migrated by a newer edge-node: {part} need a release that knows "
            f"schema version {needed} or later, this one knows {known}; run the newer release "
            "(or restore a backup taken before the upgrade)"
        )
        self.path = path
        self.component = component
