"""The request guards every app runs before routing: IP blocks and spike detection, then limits.

`add_request_guards` appends their middlewares after problem_middleware (so what they refuse
leaves as problem+json) and stores the AbuseGuard on the app under ABUSE_KEY. Its metrics
go to `metrics_registry`: the node's Prometheus registry, or a private one when none is
given (counted, but not exported).
"""

from __future__ import annotations

import sqlite3

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge_node.abuse import AbuseGuard, AbuseMetrics, abuse_middleware
from edge_node.blocks import BlockStore
from edge_node.config import Config
from edge_node.limits import limits_middleware

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
        app.middlewares.append(abuse_middleware(guard))
    app.middlewares.append(limits_middleware(config.limits))
    return guard
