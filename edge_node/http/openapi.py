"""The OpenAPI 3.1 document of the v1 API, built from the same limits the handlers enforce.

Each tenant route says what it bills: the answers it bills carry `x-usage-operation`, the
name of their entry in the operation table (edge_node.usage.operations), and the route's
description says so in words, with the units billed by default. The tenant's usage route bills
nothing (edge_node.http.openapi_usage).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from edge_node import __version__
from edge_node.admission.router import API_KEY_HEADER
from edge_node.http.openapi_examples import add_examples
from edge_node.http.openapi_schemas import (
    ID_SCHEMA,
    TIMESTAMP_SCHEMA,
    UUID_SCHEMA,
    component_schemas,
    problem_response,
)
from edge_node.http.openapi_usage import usage_operation, usage_schemas
from edge_node.rating.model import MAX_PAGE_SIZE
from edge_node.tenants.webhook_signature import SIGNATURE_HEADER
from edge_node.tenants.webhooks import WEBHOOK_PATH
from edge_node.usage.operations import (
    RATING_CREATE,
    RATING_DELETE,
    RATING_LIST,
    RATING_UPDATE,
    SCORE_READ,
    USER_ERASE,
    Operation,
)

# The extension on each billed answer naming the usage operation it bills (docs/api.md).
USAGE_OPERATION = "x-usage-operation"

_RATE_HEADERS = {
    name: {"$ref": f"#/components/headers/{name}"}
    for name in (
        "RateLimit-Policy",
        "RateLimit",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    )
}


def _ok(description: str, schema: str | None, headers: bool = True) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        }
    if headers:
        response["headers"] = _RATE_HEADERS
    return response


_TENANT_ERRORS = {
    "400": problem_response("Invalid path, query or body."),
    "401": problem_response(
        "Missing, malformed (`malformed-api-key`: a mistyped key), unknown, revoked, forged or"
        " expired credential.",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "402": problem_response(
        "The tenant's subscription is canceled, or its payment is past due beyond the grace"
        " period (`payment-required`)."
    ),
    "403": problem_response(
        "Credential of another tenant, insufficient role, suspended tenant, or a client IP"
        " blocked after a request spike (`ip-blocked`, with Retry-After)."
    ),
    "429": problem_response(
        "The tenant's rate limit is used up (`rate-limited`), its allowance for the billing"
        " period under the `block` policy (`quota-exhausted`: Retry-After is the period's end),"
        " or the API key's credits (`credits-exhausted`: Retry-After is its next refill, if"
        " it has one).",
        {
            **_RATE_HEADERS,
            "Retry-After": {"schema": {"type": "integer", "minimum": 0}},
        },
    ),
    "503": problem_response(
        "The usage queue is full (meter.on_full = reject: nothing was done), the usage of a"
        " request carried out could not be recorded durably, or this node's lease of a"
        " fleet-wide `block` allowance is spent and no other can be had just now"
        " (`quota-unavailable`: nothing was done).",
        {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
    ),
    "default": problem_response("Any other error, always as problem+json."),
}


def _param(
    name: str, where: str, schema: dict[str, Any], required: bool = True, description: str = ""
) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


_TENANT = _param(
    "tenant_id", "path", UUID_SCHEMA, description="Must be the credential's own tenant."
)


def _operation(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    *,
    bills: Mapping[str, Operation],
    **extra: Any,
) -> dict[str, Any]:
    """A tenant route; `bills` maps each answer it bills to its entry of the operation table."""
    return {
        "operationId": op_id,
        "summary": summary,
        "description": _billing_note(bills),
        "parameters": [_TENANT, *(params or [])],
        "responses": {**_billed(responses, bills), **_TENANT_ERRORS},
        **extra,
    }


def _billed(responses: dict[str, Any], bills: Mapping[str, Operation]) -> dict[str, Any]:
    """`responses`, each billed answer naming its usage operation in `x-usage-operation`."""
    return {
        status: {**response, USAGE_OPERATION: bills[status].name} if status in bills else response
        for status, response in responses.items()
    }


def _billing_note(bills: Mapping[str, Operation]) -> str:
    """What the route bills, in words: the usage operation and its default units."""
    clauses = [
        f"`{operation.name}`{f' when answered {status}' if len(bills) > 1 else ''}, "
        f"{_units(operation.default_units)} by default (`meter.units.{operation.setting}`)"
        for status, operation in bills.items()
    ]
    return "Bills the usage operation " + "; ".join(clauses) + "."


def _units(count: int) -> str:
    return f"{count} unit" if count == 1 else f"{count} units"


def _paths() -> dict[str, Any]:
    tenant = "/v1/tenants/{tenant_id}"
    item_filter = _param("item_id", "query", ID_SCHEMA, required=False)
    user_filter = _param("user_id", "query", ID_SCHEMA, required=False)
    limit = _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 50},
        required=False,
    )
    cursor = _param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"},
        required=False,
        description="`next_cursor` of the previous page.",
    )
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RatingInput"}}},
    }
    return {
        f"{tenant}/ratings": {
            "post": _operation(
                "upsertRating",
                "Create or replace the user's rating of an item (writer).",
                {
                    "200": _ok("Replaced the user's existing rating.", "Rating"),
                    "201": _ok("Created a rating.", "Rating"),
                    "413": problem_response("Body larger than the configured limit."),
                    "415": problem_response("Body is not application/json in UTF-8."),
                },
                bills={"201": RATING_CREATE, "200": RATING_UPDATE},
                requestBody=body,
            ),
            "get": _operation(
                "listRatings",
                "Ratings in creation order, a page at a time (reader).",
                {"200": _ok("One page.", "RatingPage")},
                [item_filter, user_filter, limit, cursor],
                bills={"200": RATING_LIST},
            ),
        },
        f"{tenant}/ratings/{{rating_id}}": {
            "delete": _operation(
                "deleteRating",
                "Delete one rating (admin, or a token bound to its user).",
                {
                    "204": _ok("Deleted.", None),
                    "404": problem_response("No live rating with that id in this tenant."),
                },
                [_param("rating_id", "path", UUID_SCHEMA)],
                bills={"204": RATING_DELETE},
            ),
        },
        f"{tenant}/users/{{user_id}}": {
            "delete": _operation(
                "eraseUser",
                "Delete every rating of a user and erase their comments (admin, "
                "or a token bound to that user).",
                {"200": _ok("Erased.", "UserErasure")},
                [_param("user_id", "path", ID_SCHEMA)],
                bills={"200": USER_ERASE},
            ),
        },
        f"{tenant}/items/{{item_id}}/score": {
            "get": _operation(
                "itemScore",
                "The item's rating count, average and histogram (reader).",
                {"200": _ok("The score; zero counts for an item nobody rated.", "ItemScore")},
                [_param("item_id", "path", ID_SCHEMA)],
                bills={"200": SCORE_READ},
            ),
        },
        f"{tenant}/usage": {"get": usage_operation(_TENANT, _RATE_HEADERS)},
        WEBHOOK_PATH: {"post": _webhook_operation()},
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Alive.",
                "security": [],
                "responses": {"200": _ok("Alive.", "Status", headers=False)},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Storage open and writable.",
                "security": [],
                "responses": {
                    "200": _ok("Ready.", "Status", headers=False),
                    "503": problem_response("Not ready."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, text exposition format 0.0.4 (docs/metrics.md).",
                "security": [],
                "responses": {
                    "200": {"description": "The metrics.", "content": {"text/plain": {}}},
                    "404": problem_response("Metrics are off (metrics.enabled)."),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1.", "content": {"application/json": {}}}
                },
            }
        },
    }


def _webhook_operation() -> dict[str, Any]:
    signature = _param(
        SIGNATURE_HEADER,
        "header",
        {"type": "string"},
        description="t=<Unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>' keyed with the"
        " endpoint's signing secret>; several v1 values may be given.",
    )
    return {
        "operationId": "stripeWebhook",
        "summary": "A Stripe event, authenticated by its signature (no tenant credential);"
        " each event id is applied once.",
        "security": [],
        "parameters": [signature],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/StripeEvent"},
                            {"$ref": "#/components/schemas/StripeThinEvent"},
                        ]
                    }
                }
            },
        },
        "responses": {
            "200": _ok(
                "Received: applied, or recorded as stale, ignored, pending (a thin event the"
                " sync worker fetches and applies) or a duplicate.",
                "WebhookReceipt",
                headers=False,
            ),
            "400": problem_response(
                "No valid signature by the current or previous secret (`invalid-signature`),"
                " a signature outside the tolerance (`stale-signature`), or a body that is"
                " not a JSON Stripe event (`malformed-json`, `invalid-event`)."
            ),
            "404": problem_response(
                "This node takes no webhooks: webhooks.secret_file is not set."
            ),
            "413": problem_response("Body larger than webhooks.max_body_bytes."),
            "503": problem_response(
                "node.sqlite could not record the event; Stripe delivers it again.",
                {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
            ),
            "default": problem_response("Any other error, always as problem+json."),
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edge-node",
            "version": __version__,
            "description": "Tenant-routed ratings served from the nearest edge node.",
        },
        "security": [{"apiKey": []}, {"bearerJwt": []}],
        "paths": add_examples(_paths()),
        "components": {
            "schemas": {**component_schemas(), **usage_schemas(UUID_SCHEMA, TIMESTAMP_SCHEMA)},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Claims: tenant_id, role (reader|writer|admin), exp;"
                    " optional sub binds a writer to one user.",
                },
            },
            "headers": _rate_limit_headers(),
        },
    }


def _rate_limit_headers() -> dict[str, Any]:
    """The fields of draft-ietf-httpapi-ratelimit-headers-11, and the older triplet."""
    legacy = " Sent only with `rate_limit.legacy_headers = true`."
    return {
        "RateLimit-Policy": {
            "schema": {"type": "string"},
            "description": "Structured Field List of the tenant's policies:"
            ' `"minute";q=<requests per minute>;w=60` and, when the tenant has an allowance,'
            ' `"period";q=<units per billing period>;w=<period length in seconds>`, and for'
            ' an API key with credits `"credits";q=<credits when full>[;w=<refill interval>]`'
            " (docs/quotas.md).",
            "example": '"minute";q=1000;w=60, "period";q=50000;w=2678400',
        },
        "RateLimit": {
            "schema": {"type": "string"},
            "description": "Structured Field List of what is left under each policy: r (requests"
            " or units left), t (seconds until the bucket is full, or until the period ends).",
            "example": '"minute";r=998;t=1, "period";r=41234;t=2071234',
        },
        "RateLimit-Limit": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Requests per minute for the tenant." + legacy,
        },
        "RateLimit-Remaining": {
            "schema": {"type": "integer", "minimum": 0},
            "description": "Requests left in the bucket." + legacy,
        },
        "RateLimit-Reset": {
            "schema": {"type": "integer", "minimum": 0},
            "description": "Seconds until the bucket is full again." + legacy,
        },
    }
