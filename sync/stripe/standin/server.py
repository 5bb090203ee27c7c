"""The stand-in's HTTP server: Stripe's wire rules around the account, and switches to break it.

Every API request goes through, in order: call counting, the switches (`hang` never answers,
`drop` closes the connection, `fail` answers 500, `throttle` answers 429), Bearer
authentication (401 for a key it does not hold), the Idempotency-Key rules for POSTs
(sync/stripe/standin/idempotency.py; `fail` acts inside that layer for a keyed POST, so its
500 is saved and replayed for the key, and `fail_after_work` does the work and then answers
a saved 500), the per-call latency, and for meter events one call in flight per customer
and meter (a second one gets 429 rate_limit). `lose_answers` processes a request and then
drops the connection, so the caller cannot know it succeeded.

Tests drive it in-process through `StripeStandin` or, for a daemon in another process,
through the admin API under `/_standin/` (sync/stripe/standin/admin.py; no authentication:
loopback tests only).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from sync.stripe.standin import admin, statements
from sync.stripe.standin.clocks import StandinClock
from sync.stripe.standin.engine import Engine
from sync.stripe.standin.events import EventLog
from sync.stripe.standin.faults import StripeFault
from sync.stripe.standin.forms import FormError, decode_form
from sync.stripe.standin.idempotency import IdempotencyLayer
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.meters import meter_event_subject, record_meter_event
from sync.stripe.standin.routes import Handler, api_routes

DEFAULT_API_KEY = "sk_test_standin"
THROTTLE_RETRY_AFTER = "1"


@dataclass
class Switches:
    """Ways to break the stand-in, or to make it behave as Stripe does in some accounts; all
    off by default."""

    fail: bool = False  # answer every API call 500 api_error
    hang: bool = False  # accept every API call and never answer
    drop: bool = False  # close the connection before doing anything
    throttle: bool = False  # answer every API call 429 rate_limit, with Retry-After
    lose_answers: bool = False  # do the work, then close the connection without answering
    # A POST with an Idempotency-Key does the work, then answers 500 (saved for the key):
    # Stripe failing after the object was made.
    fail_after_work: bool = False
    # Customer search misses customers created less than this many seconds ago (Stripe's
    # search index lags, "under a minute" normally, up to an hour during incidents).
    search_lag: float = 0.0
    search_disabled: bool = False  # no /v1/customers/search (404), as for accounts in India
    refuse_customers: bool = False  # POST /v1/customers answers 400: provisioning fails
    # Meter events with these identifiers are accepted, then dropped by asynchronous
    # validation and reported in a thin event, with the given error code.
    drop_identifiers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0  # seconds every API call takes
    # The switches apply only to calls whose path, or method and path ("POST /v1/customers"),
    # starts with this ("": every call).
    only: str = ""


@dataclass
class StandinSettings:
    """How the stand-in compresses Stripe's timings for tests (admin `settings`)."""

    summary_lag_seconds: float = 0.0  # events this recent are not in summaries yet


class StripeStandin:
    """A stateful, in-memory Stripe over real HTTP on loopback."""

    def __init__(
        self, api_keys: Iterable[str] = (DEFAULT_API_KEY,), *, clock: StandinClock | None = None
    ) -> None:
        self.api_keys = set(api_keys)
        self.clock = clock or StandinClock()
        self.switches = Switches()
        self.settings = StandinSettings()
        self.account = Account(self.clock.now, EventLog(self.clock.now))
        self.engine = Engine(lambda: self.account)
        self.calls: Counter[str] = Counter()
        self.idempotency = IdempotencyLayer()
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
            setattr(self.switches, name, _switch_value(name, value))

    def billed(self, customer_id: str) -> int | float:
        """Units of the customer's meter events that reach an invoice: counted by a
        finalized invoice, or in a period whose invoice is still to be finalized."""
        return statements.number(statements.billed(self.account, customer_id))

    def metered(self, customer_id: str) -> int | float:
        """Units the meter holds for the customer (what event summaries add up to)."""
        totals = statements.usage_totals(self.account).get(customer_id, {})
        return statements.number(totals.get("metered", Decimal(0)))

    def statement(self, customer_id: str) -> dict[str, Any]:
        """The customer's invoices per period and its usage in each state."""
        return statements.statement(self.account, customer_id)

    async def advance(self, seconds: float) -> None:
        """Move the stand-in's clock and wait until everything then due has happened."""
        self.clock.advance(seconds)
        await self.engine.catch_up()

    def reset(self) -> None:
        self.account = Account(self.clock.now, EventLog(self.clock.now))
        self.calls.clear()
        self.idempotency.clear()
        self.switches = Switches()
        self.settings = StandinSettings()
        self.engine.reset()
        self.clock.offset = 0.0

    def state(self) -> dict[str, Any]:
        return admin.state(self)

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
        await self.engine.start()
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # The app.

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._stripe_rules])
        for method, path, handler in api_routes(self):
            app.router.add_route(method, path, self._endpoint(handler))
        admin.add_routes(app, self)
        return app

    async def meter_event(self, request: web.Request, form: dict[str, Any]) -> Any:
        event_name, customer_id, _ = meter_event_subject(form)
        slot = (customer_id, event_name)
        if slot in self._metering:
            raise StripeFault(
                429,
                "Only one concurrent meter event request per customer and meter is allowed.",
                code="rate_limit",
            )
        self._metering.add(slot)
        try:
            await self.latency()
            return record_meter_event(self.account, form, self.switches.drop_identifiers)
        finally:
            self._metering.discard(slot)

    async def latency(self) -> None:
        if self.switches.latency > 0:  # for every call: `only` does not narrow latency
            await asyncio.sleep(self.switches.latency)

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            form = await _form(request)
            key = request.headers.get("Idempotency-Key")
            if request.method != "POST" or not key:
                return _json(200, await handler(request, form))
            switched = self._switched(request)
            return await self.idempotency.run(
                request,
                key,
                form,
                lambda: handler(request, form),
                now=self.clock.now(),
                fail_before=self.switches.fail and switched,
                fail_after=self.switches.fail_after_work and switched,
            )

        return endpoint

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


def _switch_value(name: str, value: Any) -> Any:
    if name in ("latency", "search_lag"):
        return float(value)
    if name == "only":
        return str(value)
    if name == "drop_identifiers":
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return {str(k): "meter_event_customer_not_found" for k in value}
    return bool(value)


def _keyed_post(request: web.Request) -> bool:
    return request.method == "POST" and bool(request.headers.get("Idempotency-Key"))


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise web.HTTPException()  # aiohttp gives up on the closed connection quietly


async def _form(request: web.Request) -> dict[str, Any]:
    if request.method in ("GET", "DELETE"):
        text = request.query_string
    elif request.content_type == "application/json":
        return dict(orjson.loads(await request.read() or b"{}"))
    else:
        text = await request.text()
    try:
        return decode_form(text)
    except FormError as exc:
        raise StripeFault(400, str(exc)) from None


def _json(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")
