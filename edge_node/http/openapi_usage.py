"""The OpenAPI document's part for the tenant's usage API (edge_node.tenant_usage): its path,
its answers and their schemas. The route bills nothing, so its answers carry no
`x-usage-operation`; it takes a rate-limit token like any route, with the same headers."""

from __future__ import annotations

from typing import Any

from edge_node.http.openapi_schemas import problem_response
from edge_node.tenant_usage.model import FIGURES

_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}}


def usage_operation(tenant: dict[str, Any], rate_headers: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/tenants/{tenant_id}/usage; `tenant` is the tenant path parameter,
    `rate_headers` those every rate-limited answer carries."""
    return {
        "operationId": "tenantUsage",
        "summary": "The tenant's usage in its current and previous billing period, per"
        " operation: pending at the edge, sent to Stripe, confirmed by Stripe, invoiced"
        " (reader).",
        "description": "Bills nothing, but takes a token of the tenant's rate limit like any"
        " route; served to a tenant whose payment is due. Answered from the node's own"
        " records, never waiting on Stripe: the figures are this node's, and its periods are"
        " the ones its billing last read from Stripe (docs/api.md).",
        "parameters": [tenant],
        "responses": {
            "200": {
                "description": "The usage.",
                "headers": rate_headers,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/TenantUsage"}}
                },
            },
            "400": problem_response(
                "The tenant id in the path is not a UUID (`invalid-parameter`)."
            ),
            "401": problem_response(
                "Missing, malformed, unknown, revoked, forged or expired credential.",
                {"WWW-Authenticate": {"schema": {"type": "string"}}},
            ),
            "403": problem_response(
                "Credential of another tenant (`tenant-mismatch`), a role below reader"
                " (`insufficient-role`), a suspended tenant, or a blocked client IP."
            ),
            "429": problem_response(
                "The tenant's rate limit is used up (`rate-limited`).",
                {**rate_headers, **_RETRY_AFTER},
            ),
            "503": problem_response(
                "The node's billing records cannot be read just now (`usage-unavailable`).",
                _RETRY_AFTER,
            ),
            "default": problem_response("Any other error, always as problem+json."),
        },
    }


def usage_schemas(uuid: dict[str, Any], timestamp: dict[str, Any]) -> dict[str, Any]:
    """The answer's schemas, by name."""
    figures = {
        "type": "object",
        "additionalProperties": False,
        "required": list(FIGURES),
        "properties": {name: {"type": "integer", "minimum": 0} for name in FIGURES},
        "description": "Units. pending: served here, still at the edge (queued or not yet"
        " sent); sent: sent to Stripe, its answer not recorded yet; confirmed: Stripe holds"
        " it; invoiced: confirmed, on an invoice that is final. Units set aside are in none.",
    }
    when = {"oneOf": [timestamp, {"type": "null"}]}
    period = {
        "type": "object",
        "additionalProperties": False,
        "required": ["start", "end", "invoice", "operations", "total"],
        "properties": {
            "start": {**when, "description": "null: not known on this node."},
            "end": {**when, "description": "null: not known on this node yet."},
            "invoice": {
                "type": "string",
                "enum": ["open", "draft", "final", "unknown"],
                "description": "open: the period runs; draft: ended, its invoice not final"
                " yet; final: its invoice is final; unknown: not read from Stripe since the"
                " period ended, or no period known (the tenant not billed through Stripe"
                " yet).",
            },
            "operations": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/UsageFigures"},
                "description": "By operation (`unknown`: usage recorded before operations"
                " were kept).",
            },
            "total": {"$ref": "#/components/schemas/UsageFigures"},
        },
    }
    return {
        "UsageFigures": figures,
        "PeriodUsage": period,
        "TenantUsage": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "tenant_id",
                "as_of",
                "unit",
                "current_period",
                "previous_period",
                "quota",
            ],
            "properties": {
                "tenant_id": uuid,
                "as_of": timestamp,
                "unit": {"const": "units"},
                "current_period": {"$ref": "#/components/schemas/PeriodUsage"},
                "previous_period": {
                    "oneOf": [{"$ref": "#/components/schemas/PeriodUsage"}, {"type": "null"}]
                },
                "quota": {
                    "oneOf": [{"$ref": "#/components/schemas/UsageAllowance"}, {"type": "null"}]
                },
            },
        },
        "UsageAllowance": _allowance_schema(timestamp),
    }


def _allowance_schema(timestamp: dict[str, Any]) -> dict[str, Any]:
    """The tenant's allowance in its quota period (the calendar month in UTC), on this node."""
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["period", "allowance", "policy", "used", "remaining", "thresholds_crossed"],
        "description": "The tenant's allowance per quota period (the calendar month in UTC,"
        " docs/quotas.md), the units this node served it there (for a fleet-wide `block`"
        " allowance, plus what the other nodes last reported), and the thresholds crossed;"
        " null for a tenant without an allowance.",
        "properties": {
            "period": {
                "type": "object",
                "additionalProperties": False,
                "required": ["start", "end"],
                "properties": {"start": timestamp, "end": timestamp},
            },
            "allowance": count,
            "policy": {"enum": ["block", "overage"]},
            "used": count,
            "remaining": count,
            "fleet": {
                "type": "object",
                "additionalProperties": False,
                "required": ["used_by_other_nodes", "leased_to_this_node", "lease"],
                "description": "With a central database, for a `block` allowance: the other"
                " nodes' use as last reported, the units this node was granted in the period"
                " (its own use included), and its lease's state.",
                "properties": {
                    "used_by_other_nodes": count,
                    "leased_to_this_node": count,
                    "lease": {"enum": ["live", "cut_off", "lapsed", "none"]},
                },
            },
            "thresholds_crossed": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["percent", "crossed_at", "used"],
                    "properties": {
                        "percent": {"enum": [80, 100]},
                        "crossed_at": timestamp,
                        "used": count,
                    },
                },
            },
        },
    }
