"""The stand-in's HTTP server: Stripe's wire rules around the account, and switches to break it.

Every API request goes through, in order: call counting, the switches (`hang` never answers,
`drop` closes the connection, `fail` answers 500, `throttle` answers 429), Bearer
authentication (401 for a key it does not hold), the Idempotency-Key rule (same key and same
parameters: the saved answer again with `Idempotent-Replayed: true`; other parameters: 400
idempotency_error; still running: 409; keys kept 24 hours of the stand-in's clock; the
answer is saved once the endpoint began executing, a 500 included, as Stripe does, but none
for a 4xx (failed validation, conflicts) or a dropped connection; `fail` acts inside this
layer for POSTs with an Idempotency-Key, so its 500 is saved and replayed for the key),
the per-call latency, and for meter events one call in flight per customer and meter (a
second one gets 429 rate_limit). `lose_answers` processes a request and then drops the
connection, so the caller cannot know it succeeded; `fail_after_work` does the work of a
keyed POST and then answers (and saves) a 500; `search_lag` hides customers created in the
last seconds from search, as Stripe's search index lags.

Tests drive it in-process through `StripeStandin` or, for a daemon in another process,
through the admin API under `/_standin/` (no authentication: loopback tests only).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson
from aiohttp import web

from sync.stripe.standin.faults import StripeFault
from sync.stripe.standin.forms import FormError, decode_form
from sync.stripe.standin.ledger import DAY, Account, meter_event_subject

DEFAULT_API_KEY = "sk_test_standin"
IDEMPOTENCY_WINDOW_SECONDS = DAY
THROTTLE_RETRY_AFTER = "1"

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]


class StandinClock:
    """Wall-clock time plus an offset tests move, to jump past the 24-hour and 35-day rules."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Switches:
    """Ways to break the stand-in; all off by default."""

    fail: bool = False  # answer every API call 500 api_error
    hang: bool = False  # accept every API call and never answer
    drop: bool = False  # close the connection before doing anything
    throttle: bool = False  # answer every API call 429 rate_limit, with Retry-After
    lose_answers: bool = False  # do the work, then close the connection without answering
    # A POST with an Idempotency-Key does the work, then answers 500 (saved for the key):
    # Stripe failing after the object was made.
    fail_after_work: bool = False
    # Customer search misses customers created less than this many seconds ago (Stripe's
    # search index lags, "under a minute" normally, longer during incidents).
    search_lag: float = 0.0
    latency: float = 0.0  # seconds every API call takes
    # The switches apply only to calls whose path, or method and path ("POST /v1/customers"),
    # starts with this ("": every call).
    only: str = ""


@dataclass
class _Saved:
    fingerprint: str
    created: float
    status: int | None = None  # None while the first request is still running
    body: bytes = b""


class StripeStandin:
    """A stateful, in-memory Stripe over real HTTP on loopback."""

    def __init__(
        self, api_keys: Iterable[str] = (DEFAULT_API_KEY,), *, clock: StandinClock | None = None
    ) -> None:
        self.api_keys = set(api_keys)
        self.clock = clock or StandinClock()
        self.switches = Switches()
        self.account = Account(self.clock.now)
        self.calls: Counter[str] = Counter()
        self._saved: dict[str, _Saved] = {}
        self._metering: set[tuple[str, str]] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._build_app()

    # Control from tests.

    def set_switches(self, **switches: Any) -> None:
        known = {f.name for f in fields(Switches)}
        for name, value in switches.items():
            if name not in known:
                raise ValueError(f"unknown switch {name!r}; known: {sorted(known)}")
            kind = {"latency": float, "only": str}.get(name, bool)
            setattr(self.switches, name, kind(value))

    def billed(self, customer_id: str) -> int:
        """Value accepted from meter events of a customer (duplicates not counted)."""
        return self.account.billed[customer_id]

    def reset(self) -> None:
        self.account = Account(self.clock.now)
        self.calls.clear()
        self._saved.clear()
        self.switches = Switches()
        self.clock.offset = 0.0

    def state(self) -> dict[str, Any]:
        return {
            "now": self.clock.now(),
            "clock_offset": self.clock.offset,
            "switches": asdict(self.switches),
            "calls": dict(self.calls),
            "idempotency_keys": len(self._saved),
            **self.account.dump(),
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: any free port); the base URL to give the SDK."""
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # The app.

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._stripe_rules])
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/customers", self._create(self.account_call("create_customer"))),
            ("GET", "/v1/customers/search", self._search_customers),
            ("GET", "/v1/customers", self._list(lambda a, q: a.list_customers(q))),
            ("GET", "/v1/customers/{id}", self._get(lambda a, i: a.customer(i))),
            ("POST", "/v1/products", self._create(self.account_call("create_product"))),
            ("GET", "/v1/products/{id}", self._get(lambda a, i: a.product(i))),
            ("POST", "/v1/prices", self._create(self.account_call("create_price"))),
            ("GET", "/v1/prices", self._list(lambda a, q: a.list_prices(q))),
            ("POST", "/v1/billing/meters", self._create(self.account_call("create_meter"))),
            ("GET", "/v1/billing/meters", self._list(_meters)),
            ("POST", "/v1/billing/meter_events", self._meter_event),
            ("POST", "/v1/subscriptions", self._create(self.account_call("create_subscription"))),
            ("GET", "/v1/subscriptions", self._list(lambda a, q: a.list_subscriptions(q))),
            ("GET", "/v1/subscriptions/{id}", self._get(lambda a, i: a.subscription(i))),
            (
                "POST",
                "/v1/invoices/create_preview",
                self._create(self.account_call("invoice_preview")),
            ),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._endpoint(handler))
        app.router.add_get("/_standin/state", self._admin_state)
        app.router.add_get("/_standin/meter_events", self._admin_meter_events)
        app.router.add_post("/_standin/switches", self._admin_switches)
        app.router.add_post("/_standin/clock", self._admin_clock)
        app.router.add_post("/_standin/api_keys", self._admin_api_keys)
        app.router.add_post("/_standin/reset", self._admin_reset)
        return app

    def account_call(self, name: str) -> Callable[[dict[str, Any]], Any]:
        """Account method `name`, looked up at call time (reset() replaces the account)."""

        def call(form: dict[str, Any]) -> Any:
            return getattr(self.account, name)(form)

        return call

    def _create(self, make: Callable[[dict[str, Any]], Any]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await self._latency()
            return make(form)

        return handler

    def _get(self, find: Callable[[Account, str], Any]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await self._latency()
            return find(self.account, request.match_info["id"])

        return handler

    def _list(self, select: Callable[[Account, dict[str, Any]], list[Any]]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await self._latency()
            return _page(select(self.account, form), form, request.path)

        return handler

    async def _search_customers(self, request: web.Request, form: dict[str, Any]) -> Any:
        await self._latency()
        found = self.account.search_customers(str(form.get("query", "")))
        if self.switches.search_lag:
            indexed_before = self.clock.now() - self.switches.search_lag
            found = [c for c in found if c["created"] <= indexed_before]
        return {
            "object": "search_result",
            "data": found[: int(form.get("limit", 10))],
            "has_more": False,
            "next_page": None,
            "url": request.path,
        }

    async def _meter_event(self, request: web.Request, form: dict[str, Any]) -> Any:
        event_name, customer_id, _ = meter_event_subject(form)
        slot = (customer_id, event_name)
        if slot in self._metering:
            raise StripeFault(
                429,
                "Only one concurrent meter event request per customer and meter is allowed.",
                type="invalid_request_error",
                code="rate_limit",
            )
        self._metering.add(slot)
        try:
            await self._latency()
            return self.account.record_meter_event(form)
        finally:
            self._metering.discard(slot)

    async def _latency(self) -> None:
        if self.switches.latency > 0:  # for every call: `only` does not narrow latency
            await asyncio.sleep(self.switches.latency)

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            form = await _form(request)
            key = request.headers.get("Idempotency-Key")
            if request.method != "POST" or not key:
                return _json(200, await handler(request, form))
            return await self._idempotent(request, key, form, handler)

        return endpoint

    async def _idempotent(
        self, request: web.Request, key: str, form: dict[str, Any], handler: Handler
    ) -> web.StreamResponse:
        now = self.clock.now()
        fingerprint = hashlib.sha256(
            orjson.dumps([request.method, request.path, form], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        saved = self._saved.get(key)
        if saved is not None and now - saved.created >= IDEMPOTENCY_WINDOW_SECONDS:
            del self._saved[key]  # pruned after 24 hours: the key is new again
            saved = None
        if saved is not None:
            if saved.fingerprint != fingerprint:
                raise StripeFault(
                    400,
                    f"Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    type="idempotency_error",
                )
            if saved.status is None:
                raise StripeFault(
                    409,
                    "There is currently another in-progress request using this Idempotent "
                    "Key (that probably means you submitted twice, and the other request is "
                    "still going through).",
                    code="idempotency_key_in_use",
                )
            response = web.Response(
                status=saved.status, body=saved.body, content_type="application/json"
            )
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Idempotency-Key"] = key
            return response
        saved = self._saved[key] = _Saved(fingerprint, now)
        try:
            if self.switches.fail and self._switched(request):
                # Stripe failing while it executes the request: the 500 is saved.
                raise StripeFault(500, "An unknown error occurred.", type="api_error")
            body = orjson.dumps(await handler(request, form))
            if self.switches.fail_after_work and self._switched(request):
                raise StripeFault(500, "An unknown error occurred.", type="api_error")
        except StripeFault as fault:
            if fault.status < 500:
                # Failed validation or a conflict: nothing saved, as Stripe saves none.
                del self._saved[key]
                raise
            # Stripe saves the result of a request once it began executing, "including 500
            # errors", and replays it for the same key.
            saved.status, saved.body = fault.status, orjson.dumps(fault.body)
            response = _json(fault.status, fault.body)
            response.headers.update(fault.headers)
            response.headers["Idempotency-Key"] = key
            return response
        except BaseException:
            del self._saved[key]  # dropped or cancelled: no answer was produced
            raise
        saved.status, saved.body = 200, body
        response = web.Response(status=200, body=body, content_type="application/json")
        response.headers["Idempotency-Key"] = key
        return response

    @web.middleware
    async def _stripe_rules(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        route = request.match_info.route.resource
        self.calls[f"{request.method} {route.canonical if route else request.path}"] += 1
        try:
            await self._apply_switches(request)
            self._authenticate(request)
            if request.match_info.http_exception is not None:
                raise StripeFault(
                    404, f"Unrecognized request URL ({request.method}: {request.path})."
                )
            response = await handler(request)
        except StripeFault as fault:
            response = _json(fault.status, fault.body)
            response.headers.update(fault.headers)
            if fault.status == 429:
                response.headers.setdefault("Retry-After", THROTTLE_RETRY_AFTER)
        if self.switches.lose_answers and self._switched(request):
            _drop(request)
        response.headers["Request-Id"] = f"req_{secrets.token_hex(7)}"
        return response

    def _switched(self, request: web.Request) -> bool:
        only = self.switches.only
        return request.path.startswith(only) or f"{request.method} {request.path}".startswith(only)

    async def _apply_switches(self, request: web.Request) -> None:
        switches = self.switches
        if not self._switched(request):
            return
        if switches.hang:
            await self._stopping.wait()
            _drop(request)
        if switches.drop:
            _drop(request)
        if switches.fail and not _keyed_post(request):
            # A POST with an Idempotency-Key fails inside the idempotency layer instead.
            raise StripeFault(500, "An unknown error occurred.", type="api_error")
        if switches.throttle:
            raise StripeFault(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or token not in self.api_keys:
            raise StripeFault(401, "Invalid API Key provided.", code="api_key_invalid")

    # The admin API.

    async def _admin_state(self, request: web.Request) -> web.Response:
        return _json(200, self.state())

    async def _admin_meter_events(self, request: web.Request) -> web.Response:
        """Every meter event accepted, as [identifier, customer, value], oldest first."""
        return _json(200, self.account.accepted_meter_events())

    async def _admin_switches(self, request: web.Request) -> web.Response:
        try:
            self.set_switches(**await request.json())
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, asdict(self.switches))

    async def _admin_clock(self, request: web.Request) -> web.Response:
        document = await request.json()
        if "offset" in document:
            self.clock.offset = float(document["offset"])
        self.clock.advance(float(document.get("advance", 0)))
        return _json(200, {"now": self.clock.now(), "clock_offset": self.clock.offset})

    async def _admin_api_keys(self, request: web.Request) -> web.Response:
        self.api_keys = {str(key) for key in (await request.json())["keys"]}
        return _json(200, {"keys": len(self.api_keys)})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(200, self.state())


def _keyed_post(request: web.Request) -> bool:
    return request.method == "POST" and bool(request.headers.get("Idempotency-Key"))


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise web.HTTPException()  # aiohttp gives up on the closed connection quietly


async def _form(request: web.Request) -> dict[str, Any]:
    text = request.query_string if request.method == "GET" else await request.text()
    try:
        return decode_form(text)
    except FormError as exc:
        raise StripeFault(400, str(exc)) from None


def _page(items: list[Any], query: dict[str, Any], url: str) -> dict[str, Any]:
    """A list page in Stripe's shape, with starting_after and limit."""
    if "starting_after" in query:
        ids = [item["id"] for item in items]
        start = ids.index(query["starting_after"]) + 1 if query["starting_after"] in ids else 0
        items = items[start:]
    limit = int(query.get("limit", 10))
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}


def _meters(account: Account, query: dict[str, Any]) -> list[Any]:
    meters = list(account.meters.values())
    if "status" in query:
        meters = [m for m in meters if m["status"] == query["status"]]
    return meters


def _json(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")
