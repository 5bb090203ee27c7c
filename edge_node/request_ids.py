"""X-Request-Id: settled once per request, echoed on every response, in its logs and usage.

A well-formed incoming id (1-128 of letters, digits, `.`, `_`, `:`, `-`) is kept, so a
client or a proxy can follow its request through; anything else is replaced by a fresh
random one. The id is settled before anything else runs (edge_node.front, the outermost
middleware), so refusals at admission (401, 403, 429) and problem responses carry the id
too; while the request is served the id is in `edge_node.logs.REQUEST_ID`, which every log
line includes, and `guarded` writes it into the request's usage event. At debug level each
answered request is logged (method, path, status: never a header, so never a credential).
"""

from __future__ import annotations

import logging

from aiohttp import web

from edge_node.router import REQUEST_ID_KEY, chosen_request_id

log = logging.getLogger(__name__)


def settle_request_id(request: web.Request) -> str:
    """The request's id, chosen now and kept on the request for everything after."""
    request_id = request[REQUEST_ID_KEY] = chosen_request_id(request)
    return request_id


def log_answered(request: web.Request, status: int) -> None:
    """The access log line, at debug level only."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s answered %d", request.method, request.path, status)
