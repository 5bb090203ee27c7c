"""The outermost handling of every request: its id, the guards, its problem+json answer and its
metrics, in one frame around the app's own handling (routing, then the route's handler).

`front(metrics, guards, router)` makes the function that wraps the app's handling into the
server's request handler (`edge_node.web.limits.SERVER_HANDLER_KEY`, which edge_node.http.app
sets). In order, it: settles the request's id (edge_node.web.request_ids) and puts it in the
log context; applies the request guards (edge_node.http.guards); runs the app's handling,
with a body's time limited while it is still arriving; turns any error into problem+json
(edge_node.web.answers.problem_answer); counts and times the answer by route
(edge_node.metrics.node, when metrics are on) and the tenant it was admitted for (the abuse
guard); and sets X-Request-Id on it. Redirects, which aiohttp answers itself, are counted
and carry the id too.

Not aiohttp middlewares: an app with any middleware gets one more of aiohttp's own, and each
is a coroutine frame that every request enters and, each time it waits (a strict request
waits for its usage event's fsync), resumes. Guards run before routing, so a request they
refuse is counted under the route that routing would have found.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from edge_node.admission.router import ADMITTED_TENANT_KEY
from edge_node.http.guards import RequestGuards
from edge_node.logs import REQUEST_ID
from edge_node.metrics.node import NodeMetrics
from edge_node.web.answers import problem_answer
from edge_node.web.request_ids import REQUEST_ID_HEADER, chosen_request_id, log_answered


def front(
    metrics: NodeMetrics | None, guards: RequestGuards, router: web.UrlDispatcher
) -> Callable[[Handler], Handler]:
    """What wraps the app's handling; `metrics` None counts nothing (metrics.enabled off);
    `router` is the app's, to name the route of a request the guards refused."""
    observe = None if metrics is None else metrics.observe_request
    limits = guards.limits

    def around(handle: Handler) -> Handler:
        async def served(request: web.Request) -> web.StreamResponse:
            request_id = chosen_request_id(request)
            token = REQUEST_ID.set(request_id)
            try:
                started = time.perf_counter()
                routed = False
                redirect: web.HTTPException | None = None
                tenant_id = None
                try:
                    try:
                        now = guards.admit(request)
                        routed = True
                        try:
                            if limits.body_pending(request):
                                response = await limits.within_body_timeout(request, handle)
                            else:
                                response = await handle(request)
                        finally:
                            tenant_id = request.get(ADMITTED_TENANT_KEY)
                            guards.answered(tenant_id, now)
                    except Exception as exc:  # a Problem, an aiohttp HTTP error, or a failure
                        response = problem_answer(request, exc)
                except web.HTTPException as exc:  # a redirect, which problem_answer raises again
                    response = redirect = exc
                status = response.status
                if observe is not None:
                    match = request.match_info if routed else await router.resolve(request)
                    observe(request.method, match.route.resource, status, started, tenant_id)
                log_answered(request, status)
            finally:
                REQUEST_ID.reset(token)
            response.headers[REQUEST_ID_HEADER] = request_id
            if redirect is not None:
                raise redirect
            return response

        return served

    return around
