"""The tenant registry's values: roles, plans, tenant statuses, and the rows it hands out.

`Tenant`, `IssuedKey` and `KeyGrant` are what the registry answers on this node;
`TenantRecord`, `KeyRecord` and `RegistryChange` are its rows as they travel to and from the
central database (edge_node.tenants.replication); `StripeLink` is a tenant's Stripe ids.
No I/O here: modules that only name a role, a plan or a status need nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from edge_node.clock import format_us

Role = Literal["reader", "writer", "admin"]
Plan = Literal["payg", "tiered", "flat"]
TenantStatus = Literal["active", "suspended", "past_due", "canceled"]
# Past a tenant's allowance: serve and bill the usage, or refuse until the period ends.
QuotaPolicy = Literal["overage", "block"]
ROLES: tuple[Role, ...] = get_args(Role)
PLANS: tuple[Plan, ...] = get_args(Plan)
QUOTA_POLICIES: tuple[QuotaPolicy, ...] = get_args(QuotaPolicy)


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    status: TenantStatus
    plan: Plan
    rate_limit_per_minute: int | None
    created_at: int
    quota: int | None = None  # units per billing period; None: the plan's allowance
    quota_policy: QuotaPolicy | None = None  # None: the plan's policy

    def to_json(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "name": self.name,
            "status": self.status,
            "plan": self.plan,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "quota": self.quota,
            "quota_policy": self.quota_policy,
            "created_at": format_us(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created API key: the only moment the secret exists outside its holder."""

    key_id: str
    tenant_id: str
    role: Role
    api_key: str

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "tenant_id": self.tenant_id,
            "role": self.role,
            "api_key": self.api_key,
        }


@dataclass(frozen=True, slots=True)
class KeyCredits:
    """A key's credit grant: units it starts with, and (when `refill_every_seconds` is not 0)
    the balance it is set back to every that many seconds (edge_node.tenants.credits)."""

    credits: int
    refill: int = 0
    refill_every_seconds: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "credits": self.credits,
            "refill": self.refill if self.refill_every_seconds else None,
            "refill_every_seconds": self.refill_every_seconds or None,
        }


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a valid API key grants: its tenant (with status, limit, plan and own quota) and
    its role."""

    key_id: str
    tenant_id: str
    role: Role
    tenant_status: TenantStatus
    rate_limit_per_minute: int | None
    plan: Plan = "payg"
    quota: int | None = None
    quota_policy: QuotaPolicy | None = None
    credits: KeyCredits | None = None  # None: the key spends no credits


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant's whole registry row, as it travels between node.sqlite and the central db."""

    tenant_id: str
    name: str
    status: TenantStatus
    plan: Plan
    rate_limit_per_minute: int | None
    stripe_customer_id: str | None
    created_at: int
    updated_at: int
    quota: int | None = None
    quota_policy: QuotaPolicy | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key's registry row (its hash, never the key), as it travels."""

    key_id: str
    tenant_id: str
    key_hash: str
    role: Role
    created_at: int
    revoked_at: int | None
    credits: int | None = None  # the grant it was created with; None: it spends no credits
    refill: int | None = None
    refill_every: int | None = None  # seconds


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """A registry row waiting for upload: a tenant, or one of its keys (with the tenant, which
    the central key's foreign key needs). `seq` is its newest outbox entry."""

    seq: int
    tenant: TenantRecord
    key: KeyRecord | None


@dataclass(frozen=True, slots=True)
class StripeLink:
    """A tenant's link to Stripe: its customer and subscription ids, None until provisioned."""

    tenant_id: str
    name: str
    plan: Plan
    stripe_customer_id: str | None
    subscription_id: str | None
    created_at: int = 0  # microseconds: no Stripe customer of the tenant can be older
