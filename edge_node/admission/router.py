"""Routing a request to its tenant: credential -> TenantContext, tenant checks, role, rate limit.

Every tenant route is wrapped by `guarded(role)` (edge_node.admission.billable), which asks
the router first. In order, a request must: carry exactly one
credential that verifies (401), name a well-formed tenant in its path (400) that is the
credential's own tenant (403, whether or not that other tenant exists), belong to a tenant
that is not suspended (403) and is paid up (402: canceled, or past due beyond the grace
period, edge_node.tenants.standing), find a token in its tenant's bucket (429), and hold at
least the role the route needs (403). A billable request then holds its units of the
tenant's allowance for the billing period, if it has one (`edge_node.admission.quotas`: 429
`quota-exhausted` past a `block` allowance; with a central database, within this node's lease
of the fleet's allowance, edge_node.usage.leases), and takes them from its API key's credits, if
the key has some (`edge_node.tenants.credits`: 429 `credits-exhausted` at zero; what the
answer does not bill is given back). Only then does the handler run, with the
TenantContext, and what it served is metered (`edge_node.usage.meter`). A billable route is
refused to a tenant that must pay first. A route that bills nothing (the tenant's own usage,
`guarded(role, None)`) is not metered, spends no allowance or credits, and is served to a
tenant that must pay (the figures are what it needs then), but takes a token from the
tenant's bucket like any other (it costs the node as much); a suspended tenant is refused it
like any other.

Credentials and standing are read from the registry's view in memory
(edge_node.tenants.view), which follows node.sqlite: a key revoked or a tenant suspended or
deleted by any process is refused within milliseconds, with no query per request.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from aiohttp import web

from edge_node.admission.fields import RateLimitFields
from edge_node.admission.quotas import QuotaRules, exhausted
from edge_node.admission.ratelimit import RateDecision, RateLimiter
from edge_node.admission.tokens import TokenVerifier
from edge_node.clock import now_ms, now_us
from edge_node.config import QuotasConfig
from edge_node.errors import (
    BadRequest,
    CreditsExhausted,
    Forbidden,
    PaymentRequired,
    RateLimited,
    ServiceUnavailable,
    StorageUnavailable,
    Unauthorized,
)
from edge_node.ids import is_uuid
from edge_node.tenants.apikeys import key_id_of
from edge_node.tenants.credits import CreditDecision, CreditStore
from edge_node.tenants.model import (
    ROLES,
    KeyCredits,
    KeyGrant,
    Plan,
    QuotaPolicy,
    Role,
    TenantStatus,
)
from edge_node.tenants.registry import TenantRegistry
from edge_node.tenants.standing import payment_refusal
from edge_node.usage.leases import LeaseBook, boottime_ns
from edge_node.usage.meter import Meter
from edge_node.usage.quotas import QuotaDecision
from edge_node.usage.thresholds import ThresholdLog

API_KEY_HEADER = "X-API-Key"
# Set on a request whose credential is admitted for the tenant in its path (edge_node.abuse.guard).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edge-node", ApiKey realm="edge-node"'}
DEFAULT_PAST_DUE_GRACE_SECONDS = 72 * 3600
_RANKS = {role: rank for rank, role in enumerate(ROLES)}  # ROLES runs from least to most


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is asking: the tenant, the role, and the end user a token is bound to (if any);
    with the tenant's limit, plan and own quota."""

    tenant_id: str
    role: Role
    subject: str | None
    rate_limit_per_minute: int | None
    plan: Plan = "payg"
    quota: int | None = None
    quota_policy: QuotaPolicy | None = None
    key_id: str | None = None  # the API key's, when the credential is one
    credits: KeyCredits | None = None  # that key's credit grant, if it has one

    def has_role(self, needed: Role) -> bool:
        return _RANKS[self.role] >= _RANKS[needed]


log = logging.getLogger(__name__)
NOT_READY_RETRY_AFTER = "30"


class TenantRouter:
    """Resolves credentials against the registry and the token keys, and applies the limits."""

    def __init__(
        self,
        registry: TenantRegistry,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        *,
        past_due_grace_seconds: float = DEFAULT_PAST_DUE_GRACE_SECONDS,
        quotas: QuotasConfig | None = None,
        legacy_headers: bool = False,
        credits: CreditStore | None = None,
        thresholds: ThresholdLog | None = None,
        leases: LeaseBook | None = None,
    ) -> None:
        self.registry = registry
        self.credits = credits
        # With a central database: the leases of fleet-wide `block` allowances
        # (edge_node.usage.leases); None: each node enforces allowances on its own.
        self.leases = leases
        self.thresholds = thresholds
        self.fields = RateLimitFields(legacy=legacy_headers)
        self.quotas = QuotaRules(quotas or QuotasConfig())
        self.view = registry.view()
        self.verifier = verifier
        self.limiter = limiter
        self.past_due_grace_us = int(past_due_grace_seconds * 1_000_000)
        # The context made for each API key, kept while the view grants the key the same
        # KeyGrant object (a registry change makes new ones): one object per key, not per
        # request.
        self._key_contexts: dict[str, tuple[KeyGrant, TenantContext]] = {}
        # Why the registry this router reads is no longer node.sqlite (deleted or replaced
        # underneath): every request is refused, since revocations reach only the new file.
        self.displaced: str | None = None

    def authenticate(self, request: web.Request) -> tuple[TenantContext, TenantStatus]:
        headers = request.headers
        api_keys = headers.getall(API_KEY_HEADER, ())
        authorizations = headers.getall("Authorization", ())
        if len(api_keys) + len(authorizations) > 1:
            raise BadRequest(
                f"send one credential: one {API_KEY_HEADER} or one Authorization header",
                slug="ambiguous-credentials",
            )
        if api_keys:
            api_key = api_keys[0]
            grant = self.view.admitted(api_key) or self._verify_key(api_key)
            known = self._key_contexts.get(api_key)
            if known is None or known[0] is not grant:
                known = self._key_contexts[api_key] = (grant, _key_context(grant))
                if len(self._key_contexts) > len(self.view):  # one per live key at most
                    self._key_contexts = {api_key: known}
            return known[1], grant.tenant_status
        if not authorizations:
            raise Unauthorized(
                f"send an {API_KEY_HEADER} header or an Authorization: Bearer token",
                slug="missing-credentials",
                headers=_CHALLENGE,
            )
        return self._authenticate_token(authorizations[0])

    def _verify_key(self, api_key: str) -> KeyGrant:
        """The grant of an API key not admitted since the registry last changed; 401 otherwise."""
        key_id = key_id_of(api_key)
        if key_id is None:
            raise Unauthorized(
                "the API key is malformed: mistyped, truncated, or not an edge-node key",
                slug="malformed-api-key",
                headers=_CHALLENGE,
            )
        grant = self.view.grant(key_id, api_key)
        if grant is None:
            raise Unauthorized(
                "the API key is not valid (unknown or revoked)",
                slug="invalid-api-key",
                headers=_CHALLENGE,
            )
        return grant

    def _authenticate_token(self, authorization: str) -> tuple[TenantContext, TenantStatus]:
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
        tenant = self.view.tenant(claims.tenant_id)
        if tenant is None:
            raise Forbidden("the token's tenant is not served by this node", slug="unknown-tenant")
        context = TenantContext(
            claims.tenant_id,
            claims.role,
            claims.subject,
            tenant.rate_limit_per_minute,
            tenant.plan,
            tenant.quota,
            tenant.quota_policy,
        )
        return context, tenant.status

    def admit(
        self, request: web.Request, needed: Role, *, billable: bool = True
    ) -> tuple[TenantContext, RateDecision]:
        """The request's context, and the rate decision that let it through (a route that
        bills nothing takes a token too: it costs the node as much)."""
        if self.displaced is not None:
            raise ServiceUnavailable(
                self.displaced, slug="not-ready", headers={"Retry-After": NOT_READY_RETRY_AFTER}
            )
        context, status = self.authenticate(request)
        path_tenant = request.match_info["tenant_id"]
        # The credential's own tenant id is a UUID: only another one needs checking.
        if path_tenant != context.tenant_id and not is_uuid(path_tenant):
            raise BadRequest("tenant_id in the path must be a UUID", slug="invalid-parameter")
        if path_tenant != context.tenant_id:
            raise Forbidden(
                "the credential does not belong to the tenant in the path",
                slug="tenant-mismatch",
            )
        request[ADMITTED_TENANT_KEY] = context.tenant_id
        if status == "suspended" or (status != "active" and billable):
            self._check_standing(context.tenant_id, status)
        decision = self.limiter.take(context.tenant_id, context.rate_limit_per_minute)
        if not decision.allowed:
            raise RateLimited(
                f"the tenant's limit of {decision.limit} requests per minute is used up;"
                f" retry in {decision.retry_after_seconds} s",
                headers=self.fields.headers(decision),
            )
        if not context.has_role(needed):
            raise Forbidden(
                f"this needs the {needed} role; the credential has {context.role}",
                slug="insufficient-role",
                headers=self.fields.headers(decision),
            )
        return context, decision

    def charge(
        self, context: TenantContext, meter: Meter, units: int, rate: RateDecision
    ) -> QuotaDecision | None:
        """Hold a billable request's units against the tenant's allowance (None: it has none,
        or nothing is metered to count it); 429 `quota-exhausted` past a `block` one."""
        allowance = self.quotas.allowance(context.plan, context.quota, context.quota_policy)
        if allowance is None or meter.spend is None:
            return None
        spend = meter.spend
        leases = self.leases if allowance.block else None
        decision = spend.take(context.tenant_id, allowance, units, leases)
        # Spend and what is held are at least 80% only when this little is left: below that
        # no threshold can have been reached, and the check costs nothing more.
        if self.thresholds is not None and decision.remaining * 5 <= allowance.units + units * 5:
            spent = spend.spent(context.tenant_id)
            if leases is not None:  # the other nodes' spend, as last reported
                spent += leases.limit(context.tenant_id, spend.start_ms, boottime_ns()).others_spent
            self.thresholds.check(
                context.tenant_id, spend.start_ms, spent, allowance.units, now_ms()
            )
        if not decision.allowed:
            raise exhausted(decision, self.fields.headers(rate, decision))
        return decision

    def spends_credits(self, context: TenantContext) -> bool:
        """Whether a billable request of `context` takes its units from its API key's credits
        (the key has some, and the node keeps them)."""
        return (
            context.credits is not None and context.key_id is not None and self.credits is not None
        )

    async def spend_credits(
        self, context: TenantContext, units: int, rate: RateDecision, quota: QuotaDecision | None
    ) -> CreditDecision:
        """Take a billable request's units from its API key's credits (`spends_credits`), in
        the transaction of this loop iteration's spends, once it is durable; 429
        `credits-exhausted` when it has not that many left."""
        assert self.credits is not None
        assert context.key_id is not None
        assert context.credits is not None
        try:
            decision = await self.credits.spend_batched(
                context.key_id, context.credits, units, now_ms()
            )
        except sqlite3.Error as exc:  # busy past the lock wait, a full disk: nothing spent
            log.warning("credits of key %s not spent: %s", context.key_id, exc)
            raise StorageUnavailable(
                "the API key's credits cannot be spent just now; nothing was done"
            ) from None
        if not decision.allowed:
            headers = self.fields.headers(rate, quota, decision)
            if decision.reset_seconds is not None:
                headers["Retry-After"] = str(decision.reset_seconds)
            raise CreditsExhausted(
                f"the API key has {decision.remaining} credits left and this request needs {units}",
                headers=headers,
            )
        return decision

    def refund_credits(self, context: TenantContext, units: int, credit: CreditDecision) -> None:
        """Give back credits a request took and did not bill (it failed, or billed less), with
        this loop iteration's writes, not waited for. A refund that cannot be written is
        logged, never the answer: the request's own outcome stands (the credits stay spent)."""
        if units > 0 and context.key_id and self.credits is not None:
            self.credits.refund_later(context.key_id, units, credit.refilled_at)

    def _check_standing(self, tenant_id: str, status: TenantStatus) -> None:
        if status == "suspended":
            raise Forbidden("the tenant is suspended", slug="tenant-suspended")
        standing = self.view.tenant(tenant_id) if status == "past_due" else None
        since = None if standing is None else standing.past_due_since
        refusal = payment_refusal(status, since, now_us=now_us(), grace_us=self.past_due_grace_us)
        if refusal is not None:
            raise PaymentRequired(refusal)


def _key_context(grant: KeyGrant) -> TenantContext:
    return TenantContext(
        grant.tenant_id,
        grant.role,
        None,
        grant.rate_limit_per_minute,
        grant.plan,
        grant.quota,
        grant.quota_policy,
        grant.key_id,
        grant.credits,
    )


ROUTER_KEY = web.AppKey("router", TenantRouter)
METER_KEY = web.AppKey("meter", Meter)
# Set by admit(): the tenant a request was admitted for (edge_node.abuse counts it).
ADMITTED_TENANT_KEY = web.RequestKey("admitted_tenant", str)
