"""X-Request-Id: settled once per request, echoed on every response, in its logs and usage.

A well-formed incoming id (1-128 of letters, digits, `.`, `_`, `:`, `-`) is kept, so a
client or a proxy can follow its request through; anything else is replaced by a fresh
random one. The middleware runs outside every other, so refusals at admission (401, 403,
429) and problem responses carry the id too; while the request is served the id is in
`edge_node.logs.REQUEST_ID`, which every log line includes, and `guarded` writes it into
the request's usage event. At debug level each answered request is logged (method, path,
status: never a header, so never a credential).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from edge_node.logs import REQUEST_ID
from edge_node.router import REQUEST_ID_HEADER, REQUEST_ID_KEY, request_id_of

log = logging.getLogger(__name__)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = request_id_of(request)
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        response: web.StreamResponse = await handler(request)
        if log.isEnabledFor(logging.DEBUG):  # the access log, at debug level only
            log.debug("%s %s answered %d", request.method, request.path, response.status)
    except web.HTTPException as exc:  # what problem_middleware lets through (redirects)
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        REQUEST_ID.reset(token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
