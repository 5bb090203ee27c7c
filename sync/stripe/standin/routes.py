"""The stand-in's Stripe API: each endpoint it answers, and which rule module answers it.

v1 endpoints take Stripe's form encoding (query string for GET and DELETE) and answer
Stripe-shaped JSON; `/v2/core/events` answers v2 JSON. Every handler reads the account at
call time, since a reset replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sync.stripe.standin import (
    billing_periods,
    invoice_objects,
    invoices,
    meters,
    pricing,
    statements,
)
from sync.stripe.standin.faults import StripeFault, no_such
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.lists import newest_first, page
from sync.stripe.standin.summaries import event_summaries

if TYPE_CHECKING:
    from sync.stripe.standin.server import StripeStandin

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]
Route = tuple[str, str, Handler]


def api_routes(standin: StripeStandin) -> list[Route]:
    """(method, path, handler) for every API endpoint; more specific paths first."""
    s = standin

    def made(act: Callable[[Account, dict[str, Any]], Any]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await s.latency()
            return act(s.account, form)

        return handler

    def found(act: Callable[[Account, str, dict[str, Any]], Any]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await s.latency()
            return act(s.account, request.match_info["id"], form)

        return handler

    def listed(select: Callable[[Account, dict[str, Any]], list[Any]]) -> Handler:
        async def handler(request: web.Request, form: dict[str, Any]) -> Any:
            await s.latency()
            return page(select(s.account, form), form, request.path)

        return handler

    return [
        ("POST", "/v1/customers", made(lambda a, f: _create_customer(s, a, f))),
        ("GET", "/v1/customers/search", made(lambda a, f: _search_customers(s, a, f))),
        ("GET", "/v1/customers", listed(lambda a, q: a.list_customers(q))),
        ("GET", "/v1/customers/{id}", found(lambda a, i, f: a.customer(i))),
        ("POST", "/v1/customers/{id}", found(lambda a, i, f: a.update_customer(i, f))),
        (
            "DELETE",
            "/v1/customers/{id}",
            found(lambda a, i, f: billing_periods.delete_customer(a, i)),
        ),
        ("POST", "/v1/products", made(pricing.create_product)),
        ("GET", "/v1/products/{id}", found(lambda a, i, f: pricing.product(a, i))),
        (
            "POST",
            "/v1/prices",
            made(lambda a, f: pricing.shown(pricing.create_price(a, f), f.get("expand"))),
        ),
        (
            "GET",
            "/v1/prices",
            listed(
                lambda a, q: [pricing.shown(p, q.get("expand")) for p in pricing.list_prices(a, q)]
            ),
        ),
        (
            "GET",
            "/v1/prices/{id}",
            found(lambda a, i, f: pricing.shown(pricing.price(a, i), f.get("expand"))),
        ),
        ("POST", "/v1/billing/meters", made(meters.create_meter)),
        ("GET", "/v1/billing/meters", listed(meters.list_meters)),
        (
            "GET",
            "/v1/billing/meters/{id}/event_summaries",
            found(lambda a, i, q: event_summaries(a, i, q, s.settings.summary_lag_seconds)),
        ),
        ("GET", "/v1/billing/meters/{id}", found(lambda a, i, f: meters.meter(a, i))),
        (
            "POST",
            "/v1/billing/meters/{id}/deactivate",
            found(lambda a, i, f: meters.set_meter_status(a, i, active=False)),
        ),
        (
            "POST",
            "/v1/billing/meters/{id}/reactivate",
            found(lambda a, i, f: meters.set_meter_status(a, i, active=True)),
        ),
        ("POST", "/v1/billing/meter_events", standin.meter_event),
        ("POST", "/v1/subscriptions", made(billing_periods.create_subscription)),
        ("GET", "/v1/subscriptions", listed(billing_periods.list_subscriptions)),
        (
            "GET",
            "/v1/subscriptions/{id}",
            found(lambda a, i, f: billing_periods.subscription(a, i)),
        ),
        ("DELETE", "/v1/subscriptions/{id}", found(billing_periods.cancel)),
        ("POST", "/v1/invoices/create_preview", made(statements.preview)),
        ("GET", "/v1/invoices", listed(invoices.list_invoices)),
        (
            "GET",
            "/v1/invoices/{id}",
            found(lambda a, i, f: invoice_objects.to_stripe(a, invoices.get(a, i))),
        ),
        ("POST", "/v1/invoices/{id}/finalize", found(_finalize)),
        ("POST", "/v1/invoices/{id}", found(invoices.update)),
        ("GET", "/v1/events", listed(lambda a, q: a.events.list_events(q))),
        ("GET", "/v1/events/{id}", found(_event)),
        (
            "POST",
            "/v1/test_helpers/test_clocks",
            made(lambda a, f: a.test_clocks.create(f, a.now()).to_stripe()),
        ),
        (
            "GET",
            "/v1/test_helpers/test_clocks",
            listed(lambda a, q: [c.to_stripe() for c in a.test_clocks.listed()]),
        ),
        (
            "GET",
            "/v1/test_helpers/test_clocks/{id}",
            found(lambda a, i, f: a.test_clocks.get(i).to_stripe()),
        ),
        ("DELETE", "/v1/test_helpers/test_clocks/{id}", found(_delete_clock)),
        (
            "POST",
            "/v1/test_helpers/test_clocks/{id}/advance",
            found(lambda a, i, f: _advance_clock(s, a, i, f)),
        ),
        ("GET", "/v2/core/events/{id}", found(_thin_event)),
        ("GET", "/v2/core/events", made(_thin_events)),
    ]


def _create_customer(standin: StripeStandin, account: Account, form: dict[str, Any]) -> Any:
    if standin.switches.refuse_customers:
        raise StripeFault(
            400,
            "Customer creation is refused by this account (stand-in switch refuse_customers).",
        )
    return account.create_customer(form)


def _search_customers(standin: StripeStandin, account: Account, form: dict[str, Any]) -> Any:
    if standin.switches.search_disabled:
        # Where Stripe offers no search (India), the endpoint does not exist.
        raise StripeFault(404, "Unrecognized request URL (GET: /v1/customers/search).")
    found = account.search_customers(str(form.get("query", "")))
    if standin.switches.search_lag:
        indexed_before = account.now() - standin.switches.search_lag
        found = [c for c in found if account.indexed[c["id"]] <= indexed_before]
    found = newest_first(found, lambda c: c["created"])
    limit = int(str(form.get("limit", 10)))
    return {
        "object": "search_result",
        "data": found[:limit],
        "has_more": len(found) > limit,
        "next_page": None,
        "url": "/v1/customers/search",
    }


def _finalize(account: Account, invoice_id: str, form: dict[str, Any]) -> Any:
    invoice = invoices.get(account, invoice_id)
    if invoice.status != "draft":
        raise StripeFault(400, f"This invoice is already finalized ({invoice.status}).")
    invoices.finalize(account, invoice, account.time_of(invoice.customer))
    return invoice_objects.to_stripe(account, invoice)


def _event(account: Account, event_id: str, form: dict[str, Any]) -> Any:
    event = next((e for e in account.events.events if e["id"] == event_id), None)
    if event is None:
        raise no_such("event", event_id)
    return event


def _delete_clock(account: Account, clock_id: str, form: dict[str, Any]) -> Any:
    clock = account.test_clocks.get(clock_id)
    for customer in clock.customers:
        if not account.customers[customer]["deleted"]:
            billing_periods.delete_customer(account, customer)
    del account.test_clocks.clocks[clock_id]
    return {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}


def _advance_clock(
    standin: StripeStandin, account: Account, clock_id: str, form: dict[str, Any]
) -> Any:
    clock = account.test_clocks.get(clock_id)
    account.test_clocks.start_advance(clock, form, billing_periods.advance_limit(account, clock_id))
    account.events.emit("test_helpers.test_clock.advancing", clock.to_stripe(), account.now())
    standin.engine.advance_clock(clock)
    return clock.to_stripe()


def _thin_event(account: Account, event_id: str, form: dict[str, Any]) -> Any:
    event = account.events.thin.get(event_id)
    if event is None:
        raise StripeFault(404, f"No such event: '{event_id}'", code="resource_missing")
    return event


def _thin_events(account: Account, form: dict[str, Any]) -> Any:
    """`GET /v2/core/events`: newest first, by `object_id` (the related object) and `types`."""
    events = list(reversed(account.events.thin.values()))
    if "object_id" in form:
        events = [
            e for e in events if (e.get("related_object") or {}).get("id") == form["object_id"]
        ]
    if "types" in form:
        wanted = set(pricing.as_list(form["types"]))
        events = [e for e in events if e["type"] in wanted]
    limit = int(str(form.get("limit", 20)))
    return {"data": events[:limit], "next_page_url": None, "previous_page_url": None}
