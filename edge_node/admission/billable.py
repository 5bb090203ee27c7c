"""A billable route's request from start to end: admitted, its units held, served, metered.

`guarded(role, operation)` wraps every tenant route (edge_node.rating.handlers,
edge_node.tenant_usage.handlers). It admits the request through the app's TenantRouter
(credential, tenant, standing, rate limit, role); for a route that bills, it holds the
request's units against the tenant's allowance and its key's credits, runs the handler,
records what was served with the meter (in `strict` durability the answer waits for the
usage event to be on disk), and gives back what the answer did not bill. Every answer, a
refusal included, carries the RateLimit fields of the decisions that let it through.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from edge_node.admission.router import METER_KEY, ROUTER_KEY, TenantContext
from edge_node.errors import Problem
from edge_node.tenants.credits import CreditDecision
from edge_node.tenants.model import Role
from edge_node.usage.operations import OPERATIONS, Operation
from edge_node.usage.quotas import QuotaDecision
from edge_node.web.request_ids import request_id_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TenantHandler = Callable[[web.Request, TenantContext], Awaitable[web.StreamResponse]]


def guarded(
    needed: Role, operation: Operation | Mapping[int, Operation] | None
) -> Callable[[TenantHandler], Handler]:
    """Admit a request needing `needed`, run the handler, and meter what it served.

    `operation` is what the route does for billing, an entry of the operation table; a mapping
    picks it by response status (a POST that created bills `rating.create`, one that replaced
    `rating.update`); None: the route bills nothing (`_unbilled`).
    """
    if operation is None:
        return _unbilled(needed)
    default, by_status = _metered_as(operation)
    operations = (default, *by_status.values())

    def decorate(handler: TenantHandler) -> Handler:
        @functools.wraps(handler)
        async def admitted(request: web.Request) -> web.StreamResponse:
            app = request.app  # a property aiohttp computes each time: read once
            router, meter = app[ROUTER_KEY], app[METER_KEY]
            context, decision = router.admit(request, needed)
            quota: QuotaDecision | None = None
            credit: CreditDecision | None = None
            billed = 0
            try:
                reserved = meter.bills(operations) and meter.reserve()
                units = meter.units(operations) if reserved else 0
                try:
                    if reserved:
                        quota = router.charge(context, meter, units, decision)
                        if router.spends_credits(context):
                            credit = await router.spend_credits(context, units, decision, quota)
                    response = await handler(request, context)
                    if reserved:
                        served = by_status.get(response.status, default)
                        billed = meter.units((served,))
                        try:
                            if not await meter.record(
                                context.tenant_id, served, response.status, request_id_of(request)
                            ):
                                billed = 0
                        except Problem as problem:
                            # `usage-pending`: carried out, and its event will be written.
                            billed = billed if problem.slug == "usage-pending" else 0
                            raise
                finally:
                    if reserved:
                        meter.release()
                    if quota is not None and meter.spend is not None:
                        meter.spend.release(context.tenant_id, units)
                    if credit is not None:
                        router.refund_credits(context, units - billed, credit)
            except Problem as problem:
                fields = router.fields.headers(decision, quota, credit)
                problem.headers = {**fields, **problem.headers}
                raise
            # X-Request-Id goes on every answer, this one included, in edge_node.http.front.
            response.headers.update(router.fields.headers(decision, quota, credit))
            return response

        return admitted

    return decorate


def _unbilled(needed: Role) -> Callable[[TenantHandler], Handler]:
    """Admit a request needing `needed` to a route that bills nothing, and run the handler."""

    def decorate(handler: TenantHandler) -> Handler:
        @functools.wraps(handler)
        async def admitted(request: web.Request) -> web.StreamResponse:
            router = request.app[ROUTER_KEY]
            context, decision = router.admit(request, needed, billable=False)
            try:
                response = await handler(request, context)
            except Problem as problem:
                problem.headers = {**router.fields.headers(decision), **problem.headers}
                raise
            response.headers.update(router.fields.headers(decision))
            return response

        return admitted

    return decorate


def _metered_as(operation: Operation | Mapping[int, Operation]) -> tuple[str, dict[int, str]]:
    """The operation name a route bills by default, and by response status. Settled once, when
    the route is declared; an operation not in the table is refused there rather than billed
    as nothing (the meter knows only the table's)."""
    chosen = dict(operation) if isinstance(operation, Mapping) else {}
    default = operation if isinstance(operation, Operation) else next(iter(chosen.values()))
    for entry in (default, *chosen.values()):
        if entry not in OPERATIONS:
            raise ValueError(f"{entry.name} is not in edge_node.usage.operations' table")
    return default.name, {status: entry.name for status, entry in chosen.items()}
