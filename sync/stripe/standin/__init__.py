"""A Stripe stand-in for tests: Stripe's documented behaviour for Billing Meters, subscriptions
with billing periods, invoices, test clocks, meter event summaries and thin events, over real
HTTP, driven by the official SDK (docs/billing.md, "The Stripe stand-in").

No published stand-in covers these, so the tests run this one: in-process (`StripeStandin`)
or as a process, `python -m sync.stripe.standin --port P`, controlled through its admin API.

The model, one module per concept:

    server        the wire: switches, Bearer keys, Idempotency-Key rules (idempotency), the
                  routes (routes) and the admin API under /_standin/ (admin)
    ledger        the account: every object, its customers, `time_of(customer)` (the
                  customer's test clock, else the stand-in's clock) and Settings (the
                  invoice finalization grace, 1 to 72 hours, 1 by default)
    clocks        the stand-in's clock (wall time + offset) and Stripe's test clocks
    pricing       products and prices (lookup keys, tiers, intervals) and what a quantity costs
    meters        meters and meter events: what is refused at once, what later
    periods       the billing calendar and the spans of usage invoice lines bill
    billing_periods  subscriptions: periods on the items from the anchor, backdating,
                  collection method, cancelation
    invoices, invoice_objects  invoices made at the start and at each period end, draft for
                  the grace, finalized (usage frozen), paid or sent; their wire shape
    statements    the upcoming invoice, and per customer what is invoiced, pending, late,
                  outside every period (the admin statement; `billed`, `metered`)
    summaries     meter event summaries
    events        v1 snapshot events to webhook endpoints, v2 thin events to event
                  destinations, signed, retried with backoff
    engine        time passing: period ends, finalizations, meter error reports, test
                  clock advances, deliveries, in the background

Switches (`StripeStandin.set_switches`, admin `switches`): fail, hang, drop, throttle,
lose_answers, fail_after_work, latency, only (narrows them to a path), search_lag,
search_disabled, refuse_customers, drop_identifiers. Settings (admin `settings`):
finalization_grace_seconds, summary_lag_seconds, delivery_retry_seconds,
delivery_max_attempts, error_samples, test_clock_advance_seconds.
"""

from sync.stripe.standin.clocks import StandinClock
from sync.stripe.standin.faults import StripeFault
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.pricing import price_amount
from sync.stripe.standin.server import DEFAULT_API_KEY, StripeStandin, Switches

__all__ = [
    "DEFAULT_API_KEY",
    "Account",
    "StandinClock",
    "StripeFault",
    "StripeStandin",
    "Switches",
    "price_amount",
]
