"""Stripe's webhook signature scheme, checked without the Stripe SDK (kept off the request path).

Stripe sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`, where each
v1 is HMAC-SHA256, keyed with an endpoint's signing secret, of `"<t>." + raw body`. Several
v1 values appear while Stripe itself rolls a secret; we accept a match of any v1 with any of
our secrets (the current one and, during a rotation, the previous one), compared in constant
time. Other schemes (v0 is a test-mode scheme) are ignored. The signature is checked before
the timestamp, as Stripe's libraries do, so a forgery always reads as a forgery; a genuine
signature whose timestamp is more than `tolerance` seconds from now (either way) is stale,
which bounds how long a captured request can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

SIGNATURE_HEADER = "Stripe-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class SignatureError(Exception):
    """The request is not signed by any of our secrets."""


class StaleSignature(SignatureError):
    """Signed by one of our secrets, but at a time outside the tolerance."""


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    timestamp: int
    secret_index: int  # which of the secrets matched: 0 the current one, 1 the previous one


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex v1 signature of `payload` at `timestamp` (what Stripe computes)."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(payload: bytes, secrets: Sequence[str], timestamp: int) -> str:
    """A Stripe-Signature header value signing `payload` with each secret (for tests and tools)."""
    signatures = [f"{SCHEME}={sign(payload, secret, timestamp)}" for secret in secrets]
    return ",".join([f"t={timestamp}", *signatures])


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> VerifiedSignature:
    """Check `header` against `payload`; raises SignatureError or StaleSignature."""
    if header is None:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing")
    timestamp, digests = _parse(header)
    for index, secret in enumerate(secrets):
        expected = sign(payload, secret, timestamp).encode()
        if any(hmac.compare_digest(expected, digest) for digest in digests):
            if abs(now - timestamp) > tolerance:
                raise StaleSignature(
                    f"the signature's timestamp is {int(now - timestamp)} s from now;"
                    f" at most {tolerance} s is accepted"
                )
            return VerifiedSignature(timestamp, index)
    raise SignatureError(f"no {SCHEME} signature matches the body with this endpoint's secret")


def _parse(header: str) -> tuple[int, list[bytes]]:
    timestamp: int | None = None
    digests: list[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == SCHEME and _DIGEST.fullmatch(value):
            digests.append(value.encode())
    if timestamp is None:
        raise SignatureError(f"the {SIGNATURE_HEADER} header has no valid t= timestamp")
    if not digests:
        raise SignatureError(f"the {SIGNATURE_HEADER} header has no {SCHEME}= signature")
    return timestamp, digests
