"""The request guards every request passes before routing: IP blocks and spike detection, then
limits.

`request_guards` makes them for an app and stores the AbuseGuard on it under ABUSE_KEY;
edge_node.http.front applies them (so what they refuse leaves as problem+json). In order, a
request is refused if its client IP is blocked and counted for spike detection
(edge_node.abuse.guard, when abuse.enabled), then checked against the request limits
(edge_node.web.limits); once answered, the tenant it was admitted for (if any) is counted too.
The abuse guard's metrics go to `metrics_registry`: the node's Prometheus registry, or a
private one when none is given (counted, but not exported).
"""

from __future__ import annotations

import sqlite3

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge_node.abuse.blocks import BlockStore
from edge_node.abuse.guard import AbuseGuard, AbuseMetrics
from edge_node.config import Config
from edge_node.web.limits import RequestLimits

ABUSE_KEY = web.AppKey("abuse", AbuseGuard)


class RequestGuards:
    """`abuse` (None: off), then `limits`, for every request."""

    def __init__(self, limits: RequestLimits, abuse: AbuseGuard | None) -> None:
        self.limits = limits
        self.abuse = abuse

    def admit(self, request: web.Request) -> float:
        """Refuse `request` (raising its Problem) if its client IP is blocked or it passes a
        request limit; count it for spike detection. What it returns goes to `answered`."""
        now = 0.0 if self.abuse is None else self.abuse.admit(request)
        self.limits.check(request)
        return now

    def answered(self, tenant_id: str | None, now: float) -> None:
        """Count the answered request for the tenant it was admitted for (None: no tenant)."""
        if self.abuse is not None and tenant_id is not None:
            self.abuse.observe_tenant(tenant_id, now)


def request_guards(
    app: web.Application,
    config: Config,
    node_db: sqlite3.Connection,
    *,
    metrics_registry: CollectorRegistry | None = None,
) -> RequestGuards:
    """The guards `config` asks for; the AbuseGuard, when abuse.enabled, is kept on `app`."""
    guard = None
    if config.abuse.enabled:
        metrics = AbuseMetrics(metrics_registry or CollectorRegistry(auto_describe=True))
        guard = AbuseGuard(config.abuse, BlockStore(node_db), metrics)
        app[ABUSE_KEY] = guard
    return RequestGuards(RequestLimits(config.limits), guard)
