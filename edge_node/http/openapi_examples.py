"""Examples in the OpenAPI document: a request and a response for every operation.

The API docs page (/docs) shows them beside each operation: each parameter and request body
gets an example value, and each answer with a body (problems included) an example body.
`add_examples` writes them into the document's paths; tests check every operation has
them and that each one is valid against its schema.
"""

from __future__ import annotations

from typing import Any

from edge_node.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    Problem,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

TENANT_ID = "8e0c5b7e-2f43-4c1a-9d5e-6a1f0b3c2d41"
RATING_ID = "0b7d2c9e-51a4-4f0e-8c36-2e9d7a1f4b58"
CREATED_AT = "2026-03-14T09:26:53.589Z"

RATING = {
    "id": RATING_ID,
    "tenant_id": TENANT_ID,
    "user_id": "u1",
    "item_id": "book-42",
    "score": 5,
    "comment": "great",
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

_FIGURES = {"pending": 12, "sent": 0, "confirmed": 4810, "invoiced": 0}
USAGE = {
    "tenant_id": TENANT_ID,
    "as_of": "2026-03-14T09:26:53Z",
    "unit": "units",
    "current_period": {
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-04-01T00:00:00Z",
        "invoice": "open",
        "operations": {"score.read": _FIGURES, "rating.create": {**_FIGURES, "confirmed": 0}},
        "total": {**_FIGURES, "pending": 24},
    },
    "previous_period": {
        "start": "2026-02-01T00:00:00Z",
        "end": "2026-03-01T00:00:00Z",
        "invoice": "final",
        "operations": {"score.read": {**_FIGURES, "pending": 0, "invoiced": 4810}},
        "total": {**_FIGURES, "pending": 0, "invoiced": 4810},
    },
    "quota": {
        "period": {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
        "allowance": 6000,
        "policy": "block",
        "used": 4834,
        "remaining": 1166,
        "thresholds_crossed": [{"percent": 80, "crossed_at": "2026-03-12T17:02:11Z", "used": 4800}],
    },
}

# Parameter examples by parameter name (in path, query or header).
PARAMETERS: dict[str, Any] = {
    "tenant_id": TENANT_ID,
    "rating_id": RATING_ID,
    "user_id": "u1",
    "item_id": "book-42",
    "limit": 50,
    "cursor": "MjAyNi0wMy0xNA",
    "Stripe-Signature": "t=1773480413,"
    "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
}

# Request body examples by operationId.
REQUESTS: dict[str, Any] = {
    "upsertRating": {"user_id": "u1", "item_id": "book-42", "score": 5, "comment": "great"},
    "stripeWebhook": {
        "id": "evt_1Pq2Rs3Tu4Vw5Xy6",
        "type": "invoice.paid",
        "created": 1773480413,
        "data": {"object": {"customer": "cus_Q1w2E3r4T5y6U7"}},
    },
}

# Response body examples by operationId and status; problems are made from PROBLEMS.
RESPONSES: dict[str, dict[str, Any]] = {
    "upsertRating": {"200": {**RATING, "score": 4}, "201": RATING},
    "listRatings": {"200": {"ratings": [RATING], "next_cursor": None}},
    "eraseUser": {"200": {"user_id": "u1", "deleted": 3}},
    "itemScore": {
        "200": {
            "item_id": "book-42",
            "count": 3,
            "average": 4.333,
            "histogram": {"1": 0, "2": 0, "3": 0, "4": 2, "5": 1},
        }
    },
    "tenantUsage": {"200": USAGE},
    "stripeWebhook": {
        "200": {"event_id": "evt_1Pq2Rs3Tu4Vw5Xy6", "outcome": "applied", "duplicate": False}
    },
    "health": {"200": {"status": "ok"}},
    "ready": {"200": {"status": "ready"}},
    "metrics": {
        "200": "# TYPE edge_node_requests_total counter\n"
        'edge_node_requests_total{route="itemScore",status="200"} 42.0\n'
    },
    "openapi": {"200": {"openapi": "3.1.0", "info": {"title": "edge-node"}, "paths": {}}},
}

# One problem per status, made by the same classes the handlers raise.
PROBLEMS: dict[str, Problem] = {
    "400": BadRequest("score: must be an integer from 1 to 5"),
    "401": Unauthorized("missing credential: send X-API-Key or Authorization: Bearer"),
    "402": PaymentRequired("the tenant's subscription is canceled"),
    "403": Forbidden("this credential's role is reader; writer is needed"),
    "404": NotFound("no live rating with that id in this tenant"),
    "413": PayloadTooLarge("the body is larger than server.max_body_bytes"),
    "415": UnsupportedMediaType("the body must be application/json in UTF-8"),
    "429": RateLimited("the tenant's rate limit is used up"),
    "503": ServiceUnavailable("the usage queue is full"),
    "default": Problem("an unexpected error: the node's log has the details"),
}


def problem_example(status: str) -> dict[str, Any]:
    return PROBLEMS[status].to_document()


def add_examples(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with an example on every parameter, request body and answer body."""
    for operations in paths.values():
        for operation in operations.values():
            _add_to_operation(operation)
    return paths


def _add_to_operation(operation: dict[str, Any]) -> None:
    op_id = operation["operationId"]
    operation["parameters"] = [
        {**parameter, "example": PARAMETERS[parameter["name"]]}
        for parameter in operation.get("parameters", [])
    ]
    if "requestBody" in operation:
        for media in operation["requestBody"]["content"].values():
            media["example"] = REQUESTS[op_id]
    for status, response in operation["responses"].items():
        for kind, media in response.get("content", {}).items():
            if kind == "application/problem+json":
                media["example"] = problem_example(status)
            else:
                media["example"] = RESPONSES[op_id][status]
