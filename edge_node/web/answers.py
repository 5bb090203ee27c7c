"""HTTP plumbing every handler shares: JSON in and out, and errors as RFC 9457 problem+json."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from edge_node.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    SchemaTooNew,
    StorageUnavailable,
    UnsupportedMediaType,
)
from edge_node.sqlite import storage_failure

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def encoded_json_response(document: bytes, status: int = 200) -> web.Response:
    """An answer whose JSON document is already encoded (kept in memory, say)."""
    return web.Response(body=document, status=status, content_type="application/json")


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(problem.to_document(instance)),
        status=problem.status,
        headers=problem.headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )


# Content-Type values that need no parsing to be known as JSON in UTF-8 (any other is parsed).
_PLAIN_JSON = frozenset(
    {
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=UTF-8",
    }
)


async def read_json(request: web.Request) -> Any:
    """The request body as decoded JSON; 415, 413 or 400 problems for anything else."""
    if request.headers.get("Content-Type") not in _PLAIN_JSON:  # else parse the header
        if request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"send the body as application/json, not {request.content_type or 'nothing'}"
            )
        if request.charset not in (None, "utf-8", "UTF-8"):
            raise UnsupportedMediaType(f"send the body as UTF-8, not {request.charset}")
    try:
        body = await request.read()  # aiohttp raises 413 past client_max_size
    except web.RequestPayloadError:
        # A Content-Encoding (gzip, deflate) stream that does not decompress, or broken framing.
        raise BadRequest(
            "the body could not be decoded (check its Content-Encoding)", slug="invalid-encoding"
        ) from None
    try:
        return orjson.loads(body)  # which refuses bytes that are not UTF-8 too
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BadRequest(
                f"the body is not valid UTF-8 (byte {bad.start})", slug="invalid-encoding"
            ) from None
        raise BadRequest(f"the body is not valid JSON: {exc}", slug="malformed-json") from None


async def read_body(request: web.Request, limit: int, setting: str) -> bytes:
    """The raw body, for a route with its own size limit `limit` (named by `setting` in a 413).

    Not `request.read()`: that applies the app-wide `server.max_body_bytes` instead.
    """
    too_large = PayloadTooLarge(f"the body is larger than {setting} ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            body.extend(chunk)
            if len(body) > limit:
                raise too_large
    except web.RequestPayloadError:
        raise BadRequest(
            "the body could not be decoded (check its Content-Encoding)", slug="invalid-encoding"
        ) from None
    return bytes(body)


def _translate(exc: web.HTTPException) -> Problem:
    """aiohttp's own HTTP errors (no route, wrong method, body too large) as our problems."""
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(
            f"{exc.method} is not allowed here; use {allowed}", headers={"Allow": allowed}
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(exc.text or "the request body is too large")
    problem = Problem(exc.reason, slug="http-error", title=exc.reason)
    problem.status = exc.status
    return problem


def problem_answer(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json answer to `exc`, raised while serving `request`; a storage fault (a
    full disk, an I/O error, a damaged file: edge_node.sqlite.storage_failure) is 503 with
    Retry-After, logged on one line; anything unexpected is logged and answered 500.
    aiohttp's HTTP exceptions below 400 (redirects) are not errors: they are raised again, for
    aiohttp to answer."""
    if isinstance(exc, Problem):
        return problem_response(exc, request.path)
    if isinstance(exc, SchemaTooNew):
        log.error("serving %s %s: %s", request.method, request.path, exc)
        detail = "local storage was migrated by a newer release; retry later"
        return problem_response(StorageUnavailable(detail), request.path)
    fault = storage_failure(exc)
    if fault is not None:
        what, damaged = fault
        log.warning("storage fault serving %s %s: %s (%s)", request.method, request.path, what, exc)
        slug = "storage-damaged" if damaged else None
        detail = f"local storage failed ({what}); nothing was changed, retry later"
        return problem_response(StorageUnavailable(detail, slug=slug), request.path)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return problem_response(_translate(exc), request.path)
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return problem_response(Problem("the server failed to answer this request"))
