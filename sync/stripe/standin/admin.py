"""The stand-in's admin API under `/_standin/`, for tests that run it in another process.

    GET  /_standin/state                clock, switches, settings, calls, objects, `billed`
                                        and `metered` per customer, pending deliveries
    GET  /_standin/meter_events         counted meter events, [identifier, customer, value]
    GET  /_standin/statements           per customer: invoices per period, usage by state
    GET  /_standin/statements/{customer}
    POST /_standin/switches             {"fail": true, "only": "...", ...}: the switches back
    POST /_standin/settings             {"finalization_grace_seconds": 7200, ...}
    POST /_standin/clock                {"advance": 86400} or {"offset": 0}; waits until
                                        everything then due has happened
    POST /_standin/catch_up             {} waits until everything due has happened
    POST /_standin/webhook_endpoints    {"url", "secret", "enabled_events"?}: v1 snapshots
    POST /_standin/event_destinations   {"url", "secret", "enabled_events"?}: thin events
    POST /_standin/api_keys             {"keys": [...]}
    POST /_standin/reset                {} forget everything

No authentication: loopback tests only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sync.stripe.standin import statements

if TYPE_CHECKING:
    from sync.stripe.standin.server import StripeStandin

SETTINGS = (
    "finalization_grace_seconds",
    "summary_lag_seconds",
    "delivery_retry_seconds",
    "delivery_max_attempts",
    "error_samples",
    "test_clock_advance_seconds",
)


def add_routes(app: web.Application, standin: StripeStandin) -> None:
    def answer(make: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            document = await request.json() if request.can_read_body else {}
            try:
                result = await make(request, document)
            except (ValueError, TypeError, KeyError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, result)

        return handler

    async def clock(request: web.Request, document: dict[str, Any]) -> Any:
        if "offset" in document:
            standin.clock.offset = float(document["offset"])
        await standin.advance(float(document.get("advance", 0)))
        return {"now": standin.clock.now(), "clock_offset": standin.clock.offset}

    async def endpoint(request: web.Request, document: dict[str, Any]) -> Any:
        thin = request.path.endswith("event_destinations")
        return standin.account.events.add_endpoint(document, thin=thin).to_json()

    async def catch_up(request: web.Request, document: dict[str, Any]) -> Any:
        await standin.engine.catch_up()
        return {"now": standin.clock.now()}

    async def statement(request: web.Request, document: dict[str, Any]) -> Any:
        if "customer" in request.match_info:
            return standin.statement(request.match_info["customer"])
        return [standin.statement(c) for c in standin.account.customers]

    routes = {
        ("GET", "/_standin/state"): lambda r, d: _now(state(standin)),
        ("GET", "/_standin/meter_events"): lambda r, d: _now(meter_events(standin)),
        ("GET", "/_standin/statements"): statement,
        ("GET", "/_standin/statements/{customer}"): statement,
        ("POST", "/_standin/switches"): lambda r, d: _now(_switches(standin, d)),
        ("POST", "/_standin/settings"): lambda r, d: _now(apply_settings(standin, d)),
        ("POST", "/_standin/clock"): clock,
        ("POST", "/_standin/catch_up"): catch_up,
        ("POST", "/_standin/webhook_endpoints"): endpoint,
        ("POST", "/_standin/event_destinations"): endpoint,
        ("POST", "/_standin/api_keys"): lambda r, d: _now(_api_keys(standin, d)),
        ("POST", "/_standin/reset"): lambda r, d: _now(_reset(standin)),
    }
    for (method, path), make in routes.items():
        app.router.add_route(method, path, answer(make))


async def _now(value: Any) -> Any:
    return value


def state(standin: StripeStandin) -> dict[str, Any]:
    account = standin.account
    totals = statements.usage_totals(account)
    return {
        "now": standin.clock.now(),
        "clock_offset": standin.clock.offset,
        "switches": asdict(standin.switches),
        "settings": settings(standin),
        "calls": dict(standin.calls),
        "idempotency_keys": len(standin.idempotency),
        "customers": list(account.customers.values()),
        "products": list(account.products.values()),
        "prices": list(account.prices.values()),
        "meters": list(account.meters.values()),
        "subscriptions": list(account.subscriptions.values()),
        "test_clocks": [c.to_stripe() for c in account.test_clocks.listed()],
        "invoices": len(account.invoices),
        "meter_events": len(account.meter_events),
        "billed": {c: statements.number(t["invoiced"] + t["pending"]) for c, t in totals.items()},
        "metered": {c: statements.number(t["metered"]) for c, t in totals.items()},
        "endpoints": [e.to_json() for e in account.events.endpoints],
        "pending_deliveries": account.events.pending(),
    }


def meter_events(standin: StripeStandin) -> list[tuple[str, str, int | float]]:
    """(identifier, customer, value) of every meter event counted, oldest first."""
    return [
        (r.identifier, r.customer, statements.number(r.value))
        for r in standin.account.meter_events
        if r.counts()
    ]


def settings(standin: StripeStandin) -> dict[str, Any]:
    events, engine = standin.account.events, standin.engine
    return {
        "finalization_grace_seconds": standin.account.settings.finalization_grace_seconds,
        "summary_lag_seconds": standin.settings.summary_lag_seconds,
        "delivery_retry_seconds": events.retry_seconds,
        "delivery_max_attempts": events.max_attempts,
        "error_samples": engine.error_samples,
        "test_clock_advance_seconds": engine.advance_delay,
    }


def apply_settings(standin: StripeStandin, document: dict[str, Any]) -> dict[str, Any]:
    """Change settings by name (SETTINGS); the settings back."""
    unknown = set(document) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {list(SETTINGS)}")
    events, engine = standin.account.events, standin.engine
    if "finalization_grace_seconds" in document:
        standin.account.settings.set_grace(int(document["finalization_grace_seconds"]))
    if "summary_lag_seconds" in document:
        standin.settings.summary_lag_seconds = float(document["summary_lag_seconds"])
    if "delivery_retry_seconds" in document:
        events.retry_seconds = float(document["delivery_retry_seconds"])
    if "delivery_max_attempts" in document:
        events.max_attempts = int(document["delivery_max_attempts"])
    if "error_samples" in document:
        engine.error_samples = int(document["error_samples"])
    if "test_clock_advance_seconds" in document:
        engine.advance_delay = float(document["test_clock_advance_seconds"])
    return settings(standin)


def _switches(standin: StripeStandin, document: dict[str, Any]) -> dict[str, Any]:
    standin.set_switches(**document)
    return asdict(standin.switches)


def _api_keys(standin: StripeStandin, document: dict[str, Any]) -> dict[str, Any]:
    standin.api_keys = {str(key) for key in document["keys"]}
    return {"keys": len(standin.api_keys)}


def _reset(standin: StripeStandin) -> dict[str, Any]:
    standin.reset()
    return state(standin)


def _json(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")
