"""Stripe's error answers as the stand-in gives them: `{"error": {type, message, code, param}}`."""

from __future__ import annotations

from collections.abc import Mapping


class StripeFault(Exception):
    """An error answer, shaped as Stripe's `{"error": {...}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # Stripe's field name
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type, "message": message, "code": code, "param": param}}
        self.headers = dict(headers or {})


def missing(param: str) -> StripeFault:
    return StripeFault(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def no_such(kind: str, object_id: str, param: str | None = None) -> StripeFault:
    return StripeFault(
        404 if param is None else 400,
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param or "id",
    )


def duplicate_identifier(identifier: str) -> StripeFault:
    """Stripe's answer to a meter event whose identifier it already holds (see
    sync/stripe/gateway.py: the message is what clients match)."""
    return StripeFault(
        400,
        f"An event already exists with identifier {identifier}.",
        code="resource_already_exists",
        param="identifier",
    )
