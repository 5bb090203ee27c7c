"""The outermost middleware: a request's id, its metrics and its problem+json answer, in one frame.

Every request passes through here first and its answer last. In that order it:
settles the request's id (edge_node.web.request_ids) and puts it in the log context; runs the
rest (the guards of edge_node.http.guards, routing, the handler); turns any error into
problem+json (edge_node.web.answers.problem_answer); counts and times the answer by route
(edge_node.metrics.node, when metrics are on); and sets X-Request-Id on it. Redirects, which
aiohttp answers itself, are counted and carry the id too. These steps are one middleware
rather than three because each middleware costs every request a coroutine frame.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edge_node.logs import REQUEST_ID
from edge_node.metrics.node import NodeMetrics
from edge_node.web.answers import problem_answer
from edge_node.web.request_ids import REQUEST_ID_HEADER, log_answered, settle_request_id


def front_middleware(metrics: NodeMetrics | None) -> Middleware:
    """The middleware to install first; `metrics` None counts nothing (metrics.enabled off)."""
    observe = None if metrics is None else metrics.observe_request

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = settle_request_id(request)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        try:
            try:
                response = await handler(request)
            except Exception as exc:  # a Problem, an aiohttp HTTP error, or a failure
                response = problem_answer(request, exc)
            if observe is not None:
                observe(request, response.status, started)
            log_answered(request, response.status)
        except web.HTTPException as exc:  # a redirect, which problem_answer raises again
            if observe is not None:
                observe(request, exc.status, started)
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        finally:
            REQUEST_ID.reset(token)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    return front
