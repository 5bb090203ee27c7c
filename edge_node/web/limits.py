"""Request limits: request-line, query, header and body sizes, and slow-client timeouts.

aiohttp's HTTP parser refuses an over-long request line, an over-long header and too many
headers itself, before the app sees the request, and answers in plain text.
`LimitedAppRunner` serves the app through `ProblemRequestHandler`, aiohttp's protocol with
that one answer replaced by our problem+json (414 uri-too-long, 431 headers-too-large, 400
malformed-request), and with the app's own outermost handling (`SERVER_HANDLER_KEY`) around
it. What the parser does not bound (the query string, the headers' total
size, how long a body takes) `RequestLimits` checks on every request (edge_node.http.guards).

Slow clients: a connection that has not delivered a request's complete headers within
`limits.header_timeout_seconds` of opening (or of its previous response) is closed by
aiohttp's keep-alive timer, which we set to that value; a body not complete within
`limits.body_timeout_seconds` of its headers fails the read, the request gets 408 and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from edge_node.config import LimitsConfig
from edge_node.errors import BadRequest, HeadersTooLarge, Problem, RequestTimeout, UriTooLong
from edge_node.web.answers import problem_response

log = logging.getLogger(__name__)

# What an app puts around its own request handling (routing, then the route's handler): given
# that handling, the handler `LimitedAppRunner`'s server calls with each request. It stands
# where aiohttp middlewares would, at less cost: an app with any middleware gets one more of
# aiohttp's own, and each is a coroutine frame that every request enters and, each time the
# request waits, resumes. edge_node.http.app sets it (edge_node.http.front).
SERVER_HANDLER_KEY: web.AppKey[Callable[[Handler], Handler]] = web.AppKey("server_handler")


def runner_settings(limits: LimitsConfig) -> dict[str, Any]:
    """aiohttp server keyword arguments (AppRunner/Server) that enforce `limits`.

    A request line and a header line that are too long raise the same parser error, told
    apart only by the limit it names; when the two limits are equal the request line gets
    one byte more, so that the answer can still say which one was exceeded.
    """
    line = limits.max_request_line_bytes
    field = limits.max_header_line_bytes
    return {
        "max_line_size": line + 1 if line == field else line,
        "max_field_size": field,
        "max_headers": limits.max_headers,
        "keepalive_timeout": limits.header_timeout_seconds,
    }


def parser_problem(exc: BaseException | None, max_line_size: int, max_headers: int) -> Problem:
    """The problem answering a request aiohttp's parser refused with `exc`."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == max_line_size:
            return UriTooLong(
                "the request line is longer than limits.max_request_line_bytes allows"
            )
        return HeadersTooLarge("a header is longer than limits.max_header_line_bytes allows")
    if isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received":
        return HeadersTooLarge(f"send at most {max_headers} headers (limits.max_headers)")
    reason = exc.message if isinstance(exc, HttpProcessingError) else ""
    detail = reason.splitlines()[0][:200] if reason else "the request is not valid HTTP/1.1"
    return BadRequest(f"the request is not valid HTTP/1.1: {detail}", slug="malformed-request")


class ProblemRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol, answering what its parser refuses with problem+json."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # A client's malformed or oversized request is not a server error: no traceback.
        log.debug("refused a request from %s: %s", request.remote, exc.message[:200])
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        response = problem_response(parser_problem(exc, self.max_line_size, self.max_headers))
        response.force_close()
        return response


class _ProblemServer(web.Server):
    """aiohttp's low-level server, making ProblemRequestHandler protocols."""

    def __init__(self, handler: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        protocol_kwargs = {
            k: v for k, v in kwargs.items() if k not in ("request_factory", "handler_cancellation")
        }
        super().__init__(handler, loop=loop, **kwargs)
        self._protocol_loop = loop
        self._protocol_kwargs = protocol_kwargs

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._protocol_loop, **self._protocol_kwargs)


class LimitedAppRunner(web.AppRunner):
    """An AppRunner whose server enforces `limits`, answers parser refusals as problems and
    calls the app's `SERVER_HANDLER_KEY` handling (when it has one) with every request.

    Takes AppRunner's own keyword arguments besides; the node's app is served only this way.
    """

    def __init__(self, app: web.Application, limits: LimitsConfig, **kwargs: Any) -> None:
        super().__init__(app, **{**runner_settings(limits), **kwargs})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        handler = server.request_handler
        around = self.app.get(SERVER_HANDLER_KEY)
        if around is not None:
            # The server passes the app's own requests (its request factory's) to the handler.
            handler = cast(Any, around(cast(Handler, handler)))
        return _ProblemServer(
            handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **self._kwargs,
        )


class _BodyTimedOut(TimeoutError):
    """Set on a request's body stream when it is not complete in time."""


def _expire(content: StreamReader) -> None:
    if not content.is_eof():
        content.set_exception(_BodyTimedOut())


class RequestLimits:
    """What `limits` bounds that the parser does not: the query string, the headers' total
    size and the time a body takes. edge_node.http.guards applies them to every request."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.max_query = limits.max_query_bytes
        self.max_header_bytes = limits.max_header_bytes
        # The parser bounds each header line, so up to this many headers cannot pass the
        # total: the common request is spared summing its header sizes.
        self.always_within = limits.max_header_bytes // limits.max_header_line_bytes
        self.body_timeout = limits.body_timeout_seconds

    def check(self, request: web.Request) -> None:
        """Refuse an oversized query string (414) or header set (431)."""
        raw_path = request.raw_path
        mark = raw_path.find("?")
        if mark >= 0 and len(raw_path) - mark - 1 > self.max_query:
            raise UriTooLong(
                f"the query string is longer than limits.max_query_bytes ({self.max_query})"
            )
        raw_headers = request.raw_headers
        if len(raw_headers) > self.always_within and (
            sum(len(name) + len(value) for name, value in raw_headers) > self.max_header_bytes
        ):
            raise HeadersTooLarge(
                f"the headers total more than limits.max_header_bytes ({self.max_header_bytes})"
            )

    @staticmethod
    def body_pending(request: web.Request) -> bool:
        """Whether part of the request's body has yet to arrive."""
        return request.body_exists and not request.content.is_eof()

    async def within_body_timeout(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """`handler`'s answer, or 408 (closing the connection) when the body is not complete
        within limits.body_timeout_seconds."""
        timeout = self.body_timeout
        timer = asyncio.get_running_loop().call_later(timeout, _expire, request.content)
        try:
            return await handler(request)
        except _BodyTimedOut:
            raise RequestTimeout(
                f"the body did not arrive within limits.body_timeout_seconds ({timeout} s)",
                headers={"Connection": "close"},
            ) from None
        finally:
            timer.cancel()
