"""A tenant's billing standing: what a Stripe event asks of it, and whether it may be served.

Stripe events move a tenant between `active`, `past_due` and `canceled`:

    customer.subscription.updated   the subscription's status: active, trialing -> active;
                                    past_due, unpaid -> past_due; canceled,
                                    incomplete_expired -> canceled; any other: ignored
    customer.subscription.deleted   -> canceled
    invoice.payment_failed          -> past_due   (never out of canceled)
    invoice.paid                    -> active     (never out of canceled: a final invoice
                                                   paid does not revive a subscription)

Stripe delivers events at least once and in any order, so an event changes a tenant only
when it is newer than the last one applied to it: its `created` is later, or the same second
(Stripe's clock has whole seconds) and the state it asks for is at least as severe
(canceled > past_due > active), which makes the outcome of a same-second pair independent
of the order they arrive in. "The last one" differs by kind. The subscription's status is
Stripe's truth and every change of it comes as a subscription event, so a subscription
event is compared with the last subscription event applied; invoice events are earlier,
partial signals, compared with the last event of any kind. Were a cancellation compared
with a later invoice event, `invoice.paid` arriving before the `subscription.deleted` it
followed would keep the tenant active for good. A `suspended` tenant was suspended by an
operator, and billing events leave it alone.

`customer.subscription.updated`, `invoice.created` and `invoice.finalized` also report the
tenant's billing period or an invoice's state, kept by edge_node.tenants.billing_periods.

Admission: `past_due` is served for a grace period counted from the failed payment's event,
then refused like `canceled` with 402; `suspended` stays 403 (router).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge_node.errors import BadRequest
from edge_node.ids import is_uuid
from edge_node.tenants.billing_periods import PeriodFacts, period_facts
from edge_node.tenants.model import TenantStatus

Outcome = Literal[
    "applied", "stale", "ignored", "unknown_tenant", "tenant_suspended", "other_subscription"
]
OUTCOMES: tuple[Outcome, ...] = (
    "applied",
    "stale",
    "ignored",
    "unknown_tenant",
    "tenant_suspended",
    "other_subscription",
)
SUBSCRIPTION_STATUSES: dict[str, TenantStatus] = {
    "active": "active",
    "trialing": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}
HANDLED_TYPES = (
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_failed",
    "invoice.paid",
    "invoice.created",  # the invoice's period and state only (edge_node.tenants.billing_periods)
    "invoice.finalized",
)
_EVENT_TARGETS: dict[str, TenantStatus] = {
    "customer.subscription.deleted": "canceled",
    "invoice.payment_failed": "past_due",
    "invoice.paid": "active",
}
_SEVERITY: dict[TenantStatus, int] = {"active": 0, "past_due": 1, "canceled": 2, "suspended": 3}
MAX_CREATED = 253402300799  # 9999-12-31T23:59:59Z: anything later is not a Stripe timestamp
MAX_STRIPE_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class BillingEvent:
    """What edge-node reads from a Stripe event: identity, time, whose, and what it asks for."""

    event_id: str
    type: str
    created: int  # Stripe's `created`: Unix seconds
    customer_id: str | None
    tenant_hint: str | None  # metadata.tenant_id, for a customer not yet linked to a tenant
    subscription_id: str | None
    target: TenantStatus | None  # None: no standing to change
    period: PeriodFacts | None = None  # a period or invoice it reports (billing_periods)

    @property
    def is_invoice(self) -> bool:
        return self.type.startswith("invoice.")


@dataclass(frozen=True, slots=True)
class TenantBilling:
    """A tenant's billing columns in node.sqlite."""

    tenant_id: str
    status: TenantStatus
    stripe_customer_id: str | None
    subscription_id: str | None
    billing_event_created: int | None  # the newest event applied, of any kind
    subscription_event_created: int | None  # the newest subscription event applied
    past_due_since: int | None  # microseconds


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    status: TenantStatus | None = None  # the new state when outcome is "applied"
    past_due_since: int | None = None
    # An invoice event newer than every event applied, ignored because the tenant is
    # canceled: it still moves billing_event_created on, so the columns end the same
    # whichever order the events came in (edges compare them after replication).
    advances: bool = False


def parse_event(document: Any) -> BillingEvent:
    """The parts of a Stripe event edge-node needs; 400 `invalid-event` when it is not one."""
    if not isinstance(document, dict):
        raise _invalid("the body must be a JSON object (a Stripe event)")
    event_id, event_type = document.get("id"), document.get("type")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_STRIPE_ID_LENGTH:
        raise _invalid(f"id must be a string of 1 to {MAX_STRIPE_ID_LENGTH} characters")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= MAX_STRIPE_ID_LENGTH:
        raise _invalid(f"type must be a string of 1 to {MAX_STRIPE_ID_LENGTH} characters")
    created = _integer(document.get("created"))
    if created is None or not 0 <= created <= MAX_CREATED:
        raise _invalid("created must be a Unix timestamp in seconds")
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _invalid("data.object must be an object")
    obj: dict[str, Any] = data["object"]
    subscription_id = _subscription_of(event_type, obj)
    return BillingEvent(
        event_id=event_id,
        type=event_type,
        created=created,
        customer_id=_id_of(obj.get("customer")),
        tenant_hint=_tenant_hint(obj),
        subscription_id=subscription_id,
        target=_target(event_type, obj),
        period=period_facts(event_type, obj, subscription_id),
    )


def decide(event: BillingEvent, tenant: TenantBilling | None) -> Decision:
    """What `event` does to `tenant` (see the module docstring for the rules)."""
    if tenant is None:
        return Decision("ignored" if event.target is None else "unknown_tenant")
    refused = _not_applicable(event, tenant)
    if refused is not None:
        advances = refused == "ignored" and event.target is not None and event.is_invoice
        return Decision(refused, advances=advances)
    since = None
    if event.target == "past_due":
        already = tenant.status == "past_due" and tenant.past_due_since is not None
        since = tenant.past_due_since if already else event.created * 1_000_000
    return Decision("applied", event.target, since)


def payment_refusal(
    status: TenantStatus, past_due_since_us: int | None, *, now_us: int, grace_us: int
) -> str | None:
    """Why a tenant in `status` must pay before being served (402), or None to serve it."""
    if status == "canceled":
        return "the tenant's subscription is canceled; renew it to use the API again"
    if status == "past_due" and past_due_since_us is not None:
        overdue_us = now_us - past_due_since_us
        if overdue_us > grace_us:
            hours = grace_us / 3_600_000_000
            return (
                f"the tenant's payment is past due and the grace period of {hours:g} h is over;"
                " pay the open invoice to use the API again"
            )
    return None


def _not_applicable(event: BillingEvent, tenant: TenantBilling) -> Outcome | None:
    """Why `event` leaves `tenant` as it is, or None when it applies."""
    if event.target is None:
        return "ignored"
    if tenant.status == "suspended":
        return "tenant_suspended"
    if event.subscription_id and tenant.subscription_id not in (None, event.subscription_id):
        return "other_subscription"
    if not _newer(event, tenant):
        return "stale"
    if event.is_invoice and tenant.status == "canceled":
        return "ignored"
    return None


def _newer(event: BillingEvent, tenant: TenantBilling) -> bool:
    last = tenant.billing_event_created if event.is_invoice else tenant.subscription_event_created
    if last is None or event.created > last:
        return True
    assert event.target is not None
    return event.created == last and _SEVERITY[event.target] >= _SEVERITY[tenant.status]


def _target(event_type: str, obj: dict[str, Any]) -> TenantStatus | None:
    if event_type == "customer.subscription.updated":
        status = obj.get("status")
        return SUBSCRIPTION_STATUSES.get(status) if isinstance(status, str) else None
    return _EVENT_TARGETS.get(event_type)


def _subscription_of(event_type: str, obj: dict[str, Any]) -> str | None:
    if event_type.startswith("customer.subscription."):
        return _id_of(obj.get("id"))
    # Invoices name their subscription at the top level up to API 2025-02-24.acacia and under
    # parent.subscription_details from 2025-03-31.basil on.
    details = _member(obj, "parent", "subscription_details")
    return _id_of(obj.get("subscription")) or _id_of(details.get("subscription"))


def _tenant_hint(obj: dict[str, Any]) -> str | None:
    for metadata in (
        _member(obj, "metadata"),
        _member(obj, "subscription_details", "metadata"),
        _member(obj, "parent", "subscription_details", "metadata"),
    ):
        hint = metadata.get("tenant_id")
        if isinstance(hint, str) and is_uuid(hint):
            return hint
    return None


def _member(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    """obj[path...] when every step is an object, else an empty one."""
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _id_of(value: Any) -> str | None:
    """A Stripe id, given as a string or as an expanded object with an `id`."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and 1 <= len(value) <= MAX_STRIPE_ID_LENGTH:
        return value
    return None


def _integer(value: Any) -> int | None:
    # JSON Schema counts 1700000000.0 as an integer, and so do we.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _invalid(detail: str) -> BadRequest:
    return BadRequest(f"not a Stripe event: {detail}", slug="invalid-event")
