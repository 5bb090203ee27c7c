"""Stripe's Idempotency-Key rules for POSTs, as the stand-in applies them.

Same key and same parameters (method, path, decoded form): the saved answer again, status
and body, with `Idempotent-Replayed: true`. Same key, other parameters: 400
`idempotency_error` with Stripe's message. While the first request is still running: 409
`idempotency_key_in_use`. Keys are kept 24 hours of the stand-in's clock, then the key is new
again. An answer is saved once the endpoint began executing, a 500 included ("including 500
errors"), but none for a 4xx (failed validation, conflicts) or a connection cut before an
answer existed, as Stripe saves none then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sync.stripe.standin.faults import StripeFault

IDEMPOTENCY_WINDOW_SECONDS = 86_400


@dataclass
class _Saved:
    fingerprint: str
    created: float
    status: int | None = None  # None while the first request is still running
    body: bytes = b""


class IdempotencyLayer:
    """The saved answers, by key."""

    def __init__(self) -> None:
        self._saved: dict[str, _Saved] = {}

    def __len__(self) -> int:
        return len(self._saved)

    def clear(self) -> None:
        self._saved.clear()

    async def run(
        self,
        request: web.Request,
        key: str,
        form: dict[str, Any],
        work: Callable[[], Awaitable[Any]],
        *,
        now: float,
        fail_before: bool = False,
        fail_after: bool = False,
    ) -> web.Response:
        """The answer for a keyed POST: replayed, refused, or `work()` done and saved.
        `fail_before`/`fail_after`: Stripe failing (500) before or after doing the work."""
        fingerprint = hashlib.sha256(
            orjson.dumps([request.method, request.path, form], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        saved = self._saved.get(key)
        if saved is not None and now - saved.created >= IDEMPOTENCY_WINDOW_SECONDS:
            del self._saved[key]  # pruned after 24 hours: the key is new again
            saved = None
        if saved is not None:
            return _replay(key, saved, fingerprint)
        saved = self._saved[key] = _Saved(fingerprint, now)
        try:
            if fail_before:
                raise _unknown_error()
            body = orjson.dumps(await work())
            if fail_after:
                raise _unknown_error()
        except StripeFault as fault:
            if fault.status < 500:
                del self._saved[key]  # failed validation or a conflict: nothing saved
                raise
            saved.status, saved.body = fault.status, orjson.dumps(fault.body)
            response = _answer(fault.status, saved.body, key)
            response.headers.update(fault.headers)
            return response
        except BaseException:
            del self._saved[key]  # dropped or cancelled: no answer was produced
            raise
        saved.status, saved.body = 200, body
        return _answer(200, body, key)


def _replay(key: str, saved: _Saved, fingerprint: str) -> web.Response:
    if saved.fingerprint != fingerprint:
        raise StripeFault(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
            type="idempotency_error",
        )
    if saved.status is None:
        raise StripeFault(
            409,
            "There is currently another in-progress request using this Idempotent Key (that "
            "probably means you submitted twice, and the other request is still going "
            "through).",
            code="idempotency_key_in_use",
        )
    response = _answer(saved.status, saved.body, key)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _answer(status: int, body: bytes, key: str) -> web.Response:
    response = web.Response(status=status, body=body, content_type="application/json")
    response.headers["Idempotency-Key"] = key
    return response


def _unknown_error() -> StripeFault:
    return StripeFault(500, "An unknown error occurred.", type="api_error")
