"""Routing a request to its tenant: credential -> TenantContext, tenant checks, role, rate limit.

Every tenant route is wrapped by `guarded(role)`. In order, a request must: carry exactly one
credential that verifies (401), name a well-formed tenant in its path (400) that is the
credential's own tenant (403, whether or not that other tenant exists), belong to a tenant
that is not suspended (403), find a token in its tenant's bucket (429), and hold at least
the role the route needs (403). Only then does the handler run, with the TenantContext.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from edge_node.errors import BadRequest, Forbidden, Problem, RateLimited, Unauthorized
from edge_node.ids import is_uuid
from edge_node.ratelimit import RateDecision, RateLimiter
from edge_node.registry import ROLES, Role, TenantRegistry, TenantStatus
from edge_node.tokens import TokenVerifier

API_KEY_HEADER = "X-API-Key"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edge-node", ApiKey realm="edge-node"'}
_REFUSED_STATUSES: frozenset[TenantStatus] = frozenset({"suspended", "canceled"})


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is asking: the tenant, the role, and the end user a token is bound to (if any)."""

    tenant_id: str
    role: Role
    subject: str | None
    rate_limit_per_minute: int | None

    def has_role(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


class TenantRouter:
    """Resolves credentials against the registry and the token keys, and applies the limits."""

    def __init__(
        self, registry: TenantRegistry, verifier: TokenVerifier, limiter: RateLimiter
    ) -> None:
        self.registry = registry
        self.verifier = verifier
        self.limiter = limiter

    def authenticate(self, request: web.Request) -> tuple[TenantContext, TenantStatus]:
        api_key = request.headers.get(API_KEY_HEADER)
        authorization = request.headers.get("Authorization")
        if api_key is not None and authorization is not None:
            raise BadRequest(
                f"send one credential: {API_KEY_HEADER} or Authorization, not both",
                slug="ambiguous-credentials",
            )
        if api_key is not None:
            grant = self.registry.lookup_key(api_key)
            if grant is None:
                raise Unauthorized(
                    "the API key is not valid (unknown or revoked)",
                    slug="invalid-api-key",
                    headers=_CHALLENGE,
                )
            context = TenantContext(grant.tenant_id, grant.role, None, grant.rate_limit_per_minute)
            return context, grant.tenant_status
        if authorization is None:
            raise Unauthorized(
                f"send an {API_KEY_HEADER} header or an Authorization: Bearer token",
                slug="missing-credentials",
                headers=_CHALLENGE,
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
                slug="invalid-token",
                headers=_CHALLENGE,
            )
        try:
            claims = self.verifier.verify(token.strip())
        except Unauthorized as exc:
            exc.headers = _CHALLENGE
            raise
        tenant = self.registry.get_tenant(claims.tenant_id)
        if tenant is None:
            raise Forbidden("the token's tenant is not served by this node", slug="unknown-tenant")
        context = TenantContext(
            claims.tenant_id, claims.role, claims.subject, tenant.rate_limit_per_minute
        )
        return context, tenant.status

    def admit(self, request: web.Request, needed: Role) -> tuple[TenantContext, RateDecision]:
        context, status = self.authenticate(request)
        path_tenant = request.match_info["tenant_id"]
        if not is_uuid(path_tenant):
            raise BadRequest("tenant_id in the path must be a UUID", slug="invalid-parameter")
        if path_tenant != context.tenant_id:
            raise Forbidden(
                "the credential does not belong to the tenant in the path",
                slug="tenant-mismatch",
            )
        if status in _REFUSED_STATUSES:
            raise Forbidden(f"the tenant is {status}", slug="tenant-suspended")
        decision = self.limiter.take(context.tenant_id, context.rate_limit_per_minute)
        if not decision.allowed:
            raise RateLimited(
                f"the tenant's limit of {decision.limit} requests per minute is used up;"
                f" retry in {decision.retry_after_seconds} s",
                headers=decision.headers(),
            )
        if not context.has_role(needed):
            raise Forbidden(
                f"this needs the {needed} role; the credential has {context.role}",
                slug="insufficient-role",
                headers=decision.headers(),
            )
        return context, decision


ROUTER_KEY = web.AppKey("router", TenantRouter)

TenantHandler = Callable[[web.Request, TenantContext], Awaitable[web.StreamResponse]]


def guarded(
    needed: Role,
) -> Callable[[TenantHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Admit the request for a route needing `needed`, then run the handler with its context."""

    def decorate(handler: TenantHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def admitted(request: web.Request) -> web.StreamResponse:
            context, decision = request.app[ROUTER_KEY].admit(request, needed)
            try:
                response = await handler(request, context)
            except Problem as problem:
                problem.headers = {**decision.headers(), **problem.headers}
                raise
            response.headers.update(decision.headers())
            return response

        return admitted

    return decorate
