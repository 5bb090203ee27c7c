"""GET /v1/tenants/{tenant_id}/usage: the tenant's usage, answered from the node's own files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from aiohttp import web

from edge_node.admission.billable import guarded
from edge_node.admission.router import METER_KEY, ROUTER_KEY, TenantContext
from edge_node.errors import StorageUnavailable
from edge_node.queue import QueueError
from edge_node.tenant_usage.allowance import allowance_document
from edge_node.tenant_usage.model import UsageSource
from edge_node.web.answers import json_response

USAGE_SOURCE_KEY = web.AppKey("usage_source", UsageSource)
USAGE_PATH = "/v1/tenants/{tenant_id}/usage"

log = logging.getLogger(__name__)


@guarded("reader", None)
async def tenant_usage(request: web.Request, context: TenantContext) -> web.StreamResponse:
    """Not billed; rate-limited like any route (edge_node.admission.router)."""
    source = request.app[USAGE_SOURCE_KEY]
    try:
        usage = await asyncio.to_thread(source.usage, context.tenant_id)
    except (OSError, sqlite3.Error, QueueError) as exc:
        log.warning("usage of tenant %s could not be read: %s", context.tenant_id, exc)
        raise StorageUnavailable(
            "the node's billing records cannot be read just now", slug="usage-unavailable"
        ) from None
    router, meter = request.app[ROUTER_KEY], request.app[METER_KEY]
    document = usage.to_json()
    document["quota"] = allowance_document(
        router.quotas, meter.spend, router.thresholds, context, router.leases
    )
    return json_response(document)


def add_usage_routes(app: web.Application, source: UsageSource) -> None:
    app[USAGE_SOURCE_KEY] = source
    app.router.add_get(USAGE_PATH, tenant_usage, allow_head=False)
