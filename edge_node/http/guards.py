"""The request guards every app runs before routing: IP blocks and spike detection, then limits.

`add_request_guards` installs them as one middleware, after edge_node.http.front (so what they
refuse leaves as problem+json), and stores the AbuseGuard on the app under ABUSE_KEY. In
order, a request is refused if its client IP is blocked and counted for spike detection
(edge_node.abuse.guard, when abuse.enabled), then checked against the request limits
(edge_node.web.limits); once answered, the tenant it was admitted for (if any) is counted too.
The abuse guard's metrics go to `metrics_registry`: the node's Prometheus registry, or a
private one when none is given (counted, but not exported).
"""

from __future__ import annotations

import sqlite3

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry

from edge_node.abuse.blocks import BlockStore
from edge_node.abuse.guard import AbuseGuard, AbuseMetrics
from edge_node.admission.router import ADMITTED_TENANT_KEY
from edge_node.config import Config
from edge_node.web.limits import RequestLimits

ABUSE_KEY = web.AppKey("abuse", AbuseGuard)


def add_request_guards(
    app: web.Application,
    config: Config,
    node_db: sqlite3.Connection,
    *,
    metrics_registry: CollectorRegistry | None = None,
) -> AbuseGuard | None:
    """Install the guards on `app`; the AbuseGuard, None when abuse.enabled is off."""
    guard = None
    if config.abuse.enabled:
        metrics = AbuseMetrics(metrics_registry or CollectorRegistry(auto_describe=True))
        guard = AbuseGuard(config.abuse, BlockStore(node_db), metrics)
        app[ABUSE_KEY] = guard
    app.middlewares.append(guards_middleware(RequestLimits(config.limits), guard))
    return guard


def guards_middleware(limits: RequestLimits, abuse: AbuseGuard | None) -> Middleware:
    """One middleware applying `abuse` (None: off) and then `limits` to every request."""

    @web.middleware
    async def guards(request: web.Request, handler: Handler) -> web.StreamResponse:
        now = 0.0 if abuse is None else abuse.admit(request)
        try:
            limits.check(request)
            if limits.body_pending(request):
                return await limits.within_body_timeout(request, handler)
            return await handler(request)
        finally:
            if abuse is not None:
                tenant_id = request.get(ADMITTED_TENANT_KEY)
                if tenant_id is not None:
                    abuse.observe_tenant(tenant_id, now)

    return guards
