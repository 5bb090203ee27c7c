"""The OpenAPI 3.1 document of the v1 API, built from the same limits the handlers enforce."""

from __future__ import annotations

import functools
from typing import Any

from edge_node import __version__
from edge_node.billing_state import MAX_CREATED, MAX_STRIPE_ID_LENGTH, OUTCOMES
from edge_node.errors import PROBLEM_TYPE_BASE
from edge_node.rating.model import ID_PATTERN, MAX_COMMENT_LENGTH, MAX_ID_LENGTH, MAX_PAGE_SIZE
from edge_node.router import API_KEY_HEADER
from edge_node.webhook_signature import SIGNATURE_HEADER
from edge_node.webhooks import WEBHOOK_PATH

_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": ID_PATTERN,
    "description": "1 to 128 characters, none of them a control character.",
}
_UUID = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_RATE_HEADERS = {
    name: {"$ref": f"#/components/headers/{name}"}
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if headers:
        response["headers"] = headers
    return response


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
    "400": _problem("Invalid path, query or body."),
    "401": _problem(
        "Missing, malformed (`malformed-api-key`: a mistyped key), unknown, revoked, forged or"
        " expired credential.",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "402": _problem(
        "The tenant's subscription is canceled, or its payment is past due beyond the grace"
        " period (`payment-required`)."
    ),
    "403": _problem(
        "Credential of another tenant, insufficient role, suspended tenant, or a client IP"
        " blocked after a request spike (`ip-blocked`, with Retry-After)."
    ),
    "429": _problem(
        "The tenant's rate limit is used up.",
        {
            **_RATE_HEADERS,
            "Retry-After": {"schema": {"type": "integer", "minimum": 0}},
        },
    ),
    "503": _problem(
        "The usage queue is full (meter.on_full = reject: nothing was done) or the usage of a"
        " request carried out could not be recorded durably.",
        {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
    ),
    "default": _problem("Any other error, always as problem+json."),
}


def _param(
    name: str, where: str, schema: dict[str, Any], required: bool = True, description: str = ""
) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


_TENANT = _param("tenant_id", "path", _UUID, description="Must be the credential's own tenant.")


def _operation(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "parameters": [_TENANT, *(params or [])],
        "responses": {**responses, **_TENANT_ERRORS},
        **extra,
    }


def _schemas() -> dict[str, Any]:
    return {
        "RatingInput": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_id", "item_id", "score"],
            "properties": {
                "user_id": _ID,
                "item_id": _ID,
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
                "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT_LENGTH},
            },
        },
        "Rating": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "id",
                "tenant_id",
                "user_id",
                "item_id",
                "score",
                "comment",
                "created_at",
                "updated_at",
            ],
            "properties": {
                "id": _UUID,
                "tenant_id": _UUID,
                "user_id": _ID,
                "item_id": _ID,
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
                "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT_LENGTH},
                "comment_unreadable": {
                    "const": True,
                    "description": "Present only when the stored comment cannot be opened on"
                    " this node (its tenant data key is destroyed or not yet synced here, or the"
                    " ciphertext fails authentication); `comment` is then null.",
                },
                "created_at": _TIMESTAMP,
                "updated_at": _TIMESTAMP,
            },
        },
        "RatingPage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ratings", "next_cursor"],
            "properties": {
                "ratings": {"type": "array", "items": {"$ref": "#/components/schemas/Rating"}},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "ItemScore": {
            "type": "object",
            "additionalProperties": False,
            "required": ["item_id", "count", "average", "histogram"],
            "properties": {
                "item_id": _ID,
                "count": {"type": "integer", "minimum": 0},
                "average": {
                    "type": ["number", "null"],
                    "minimum": 1,
                    "maximum": 5,
                    "description": "Mean score; null when the item has no ratings.",
                },
                "histogram": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["1", "2", "3", "4", "5"],
                    "properties": {str(s): {"type": "integer", "minimum": 0} for s in range(1, 6)},
                },
            },
        },
        "UserErasure": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_id", "deleted"],
            "properties": {"user_id": _ID, "deleted": {"type": "integer", "minimum": 0}},
        },
        "StripeEvent": {
            "type": "object",
            "required": ["id", "type", "created", "data"],
            "description": "A Stripe event (https://docs.stripe.com/api/events/object);"
            " members not listed here are allowed and ignored.",
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_STRIPE_ID_LENGTH},
                "type": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_STRIPE_ID_LENGTH,
                    "description": "Acted on: customer.subscription.updated,"
                    " customer.subscription.deleted, invoice.payment_failed, invoice.paid;"
                    " any other is recorded and ignored.",
                },
                "created": {"type": "integer", "minimum": 0, "maximum": MAX_CREATED},
                "data": {
                    "type": "object",
                    "required": ["object"],
                    "properties": {"object": {"type": "object"}},
                },
            },
        },
        "WebhookReceipt": {
            "type": "object",
            "additionalProperties": False,
            "required": ["event_id", "outcome", "duplicate"],
            "properties": {
                "event_id": {"type": "string"},
                "outcome": {"type": "string", "enum": list(OUTCOMES)},
                "duplicate": {
                    "type": "boolean",
                    "description": "The event was received before: `outcome` is the first"
                    " delivery's and nothing changed now.",
                },
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        },
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "description": (
                f"RFC 9457 problem details; `type` is a stable `{PROBLEM_TYPE_BASE}…` URN."
            ),
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        },
    }


def _paths() -> dict[str, Any]:
    tenant = "/v1/tenants/{tenant_id}"
    item_filter = _param("item_id", "query", _ID, required=False)
    user_filter = _param("user_id", "query", _ID, required=False)
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
                    "413": _problem("Body larger than the configured limit."),
                    "415": _problem("Body is not application/json in UTF-8."),
                },
                requestBody=body,
            ),
            "get": _operation(
                "listRatings",
                "Ratings in creation order, a page at a time (reader).",
                {"200": _ok("One page.", "RatingPage")},
                [item_filter, user_filter, limit, cursor],
            ),
        },
        f"{tenant}/ratings/{{rating_id}}": {
            "delete": _operation(
                "deleteRating",
                "Delete one rating (admin, or a token bound to its user).",
                {
                    "204": _ok("Deleted.", None),
                    "404": _problem("No live rating with that id in this tenant."),
                },
                [_param("rating_id", "path", _UUID)],
            ),
        },
        f"{tenant}/users/{{user_id}}": {
            "delete": _operation(
                "eraseUser",
                "Delete every rating of a user and erase their comments (admin, "
                "or a token bound to that user).",
                {"200": _ok("Erased.", "UserErasure")},
                [_param("user_id", "path", _ID)],
            ),
        },
        f"{tenant}/items/{{item_id}}/score": {
            "get": _operation(
                "itemScore",
                "The item's rating count, average and histogram (reader).",
                {"200": _ok("The score; zero counts for an item nobody rated.", "ItemScore")},
                [_param("item_id", "path", _ID)],
            ),
        },
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
                    "503": _problem("Not ready."),
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
                    "404": _problem("Metrics are off (metrics.enabled)."),
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
                "application/json": {"schema": {"$ref": "#/components/schemas/StripeEvent"}}
            },
        },
        "responses": {
            "200": _ok(
                "Received: applied, or recorded as stale, ignored or a duplicate.",
                "WebhookReceipt",
                headers=False,
            ),
            "400": _problem(
                "No valid signature by the current or previous secret (`invalid-signature`),"
                " a signature outside the tolerance (`stale-signature`), or a body that is"
                " not a JSON Stripe event (`malformed-json`, `invalid-event`)."
            ),
            "404": _problem("This node takes no webhooks: webhooks.secret_file is not set."),
            "413": _problem("Body larger than webhooks.max_body_bytes."),
            "503": _problem(
                "node.sqlite could not record the event; Stripe delivers it again.",
                {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
            ),
            "default": _problem("Any other error, always as problem+json."),
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
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
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
            "headers": {
                "RateLimit-Limit": {
                    "schema": {"type": "integer", "minimum": 1},
                    "description": "Requests per minute for the tenant.",
                },
                "RateLimit-Remaining": {
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Requests left in the bucket.",
                },
                "RateLimit-Reset": {
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Seconds until the bucket is full again.",
                },
            },
        },
    }
