"""The OpenAPI document's schemas: the bodies the v1 API takes and gives, in the handlers' limits.

The document (edge_node.http.openapi) lists them under `#/components/schemas`, where its
operations refer to them, and uses the id and UUID schemas for its path and query
parameters too.
"""

from __future__ import annotations

from typing import Any

from edge_node.errors import PROBLEM_TYPE_BASE
from edge_node.rating.model import ID_PATTERN, MAX_COMMENT_LENGTH, MAX_ID_LENGTH
from edge_node.tenants.standing import MAX_CREATED, MAX_STRIPE_ID_LENGTH, OUTCOMES

ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": ID_PATTERN,
    "description": "1 to 128 characters, none of them a control character.",
}
UUID_SCHEMA = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
TIMESTAMP_SCHEMA = {"type": "string", "format": "date-time"}


def component_schemas() -> dict[str, Any]:
    """Every schema of `#/components/schemas`, by name."""
    return {
        "RatingInput": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_id", "item_id", "score"],
            "properties": {
                "user_id": ID_SCHEMA,
                "item_id": ID_SCHEMA,
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
                "id": UUID_SCHEMA,
                "tenant_id": UUID_SCHEMA,
                "user_id": ID_SCHEMA,
                "item_id": ID_SCHEMA,
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
                "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT_LENGTH},
                "comment_unreadable": {
                    "const": True,
                    "description": "Present only when the stored comment cannot be opened on"
                    " this node (its tenant data key is destroyed or not yet synced here, or the"
                    " ciphertext fails authentication); `comment` is then null.",
                },
                "created_at": TIMESTAMP_SCHEMA,
                "updated_at": TIMESTAMP_SCHEMA,
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
                "item_id": ID_SCHEMA,
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
            "properties": {"user_id": ID_SCHEMA, "deleted": {"type": "integer", "minimum": 0}},
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
                    " invoice.created and invoice.finalized (and customer.subscription.updated)"
                    " also record the tenant's billing period or the invoice's state;"
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
        "StripeThinEvent": {
            "type": "object",
            "required": ["id", "object", "type", "created"],
            "description": "A thin event notification from a Stripe event destination"
            " (https://docs.stripe.com/event-destinations): no data, fetched later by the"
            " sync worker; members not listed here are allowed and ignored.",
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_STRIPE_ID_LENGTH},
                "object": {"type": "string", "enum": ["v2.core.event"]},
                "type": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_STRIPE_ID_LENGTH,
                    "description": "Applied: v1.billing.meter.error_report_triggered,"
                    " v1.billing.meter.no_meter_found (outcome `pending` until the sync"
                    " worker has fetched them); any other is recorded and ignored.",
                },
                "created": {"type": "string", "format": "date-time"},
            },
        },
        "WebhookReceipt": {
            "type": "object",
            "additionalProperties": False,
            "required": ["event_id", "outcome", "duplicate"],
            "properties": {
                "event_id": {"type": "string"},
                "outcome": {"type": "string", "enum": [*OUTCOMES, "pending"]},
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


def problem_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An answer that is a problem document (RFC 9457), with the headers it carries."""
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if headers:
        response["headers"] = headers
    return response
