"""X-Request-Id: settled once per request, echoed on every response, in its logs and usage.

A well-formed incoming id (1-128 of letters, digits, `.`, `_`, `:`, `-`) is kept, so a
client or a proxy can follow its request through; anything else is replaced by a fresh
random one. The id is settled before anything else runs (edge_node.http.front, the outermost
handling), so refusals at admission (401, 403, 429) and problem responses carry the id
too; while the request is served the id is in `edge_node.logs.REQUEST_ID`, which every log
line includes, and `guarded` writes it into the request's usage event. At debug level each
answered request is logged (method, path, status: never a header, so never a credential).
"""

from __future__ import annotations

import logging
import random
import re

from aiohttp import web

from edge_node.logs import REQUEST_ID

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def log_answered(request: web.Request, status: int) -> None:
    """The access log line, at debug level only."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s answered %d", request.method, request.path, status)


def request_id_of(request: web.Request) -> str:
    """The id settled for the request being served (edge_node.http.front), else one chosen
    now."""
    settled = REQUEST_ID.get()
    return settled if settled is not None else chosen_request_id(request)


def chosen_request_id(request: web.Request) -> str:
    """The client's X-Request-Id when it is a sane token, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    # Unique, not secret: no system call. Hex by bytes.hex(): a format spec costs twice as much.
    return random.getrandbits(128).to_bytes(16, "big").hex()
