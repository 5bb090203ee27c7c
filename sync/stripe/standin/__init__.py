"""A Stripe stand-in for tests: customers, products, prices, billing meters, meter events,
subscriptions and invoice previews over real HTTP, with Stripe's idempotency, dedup,
timestamp and concurrency rules, a movable clock, and switches to cut it off.

No published stand-in covers Billing Meters, so the tests drive this one with the official
SDK. Run it in-process (`StripeStandin`) or as a process: `python -m sync.stripe.standin`.
docs/billing.md describes it.
"""

from sync.stripe.standin.faults import StripeFault
from sync.stripe.standin.ledger import Account
from sync.stripe.standin.pricing import price_amount
from sync.stripe.standin.server import DEFAULT_API_KEY, StandinClock, StripeStandin, Switches

__all__ = [
    "DEFAULT_API_KEY",
    "Account",
    "StandinClock",
    "StripeFault",
    "StripeStandin",
    "Switches",
    "price_amount",
]
