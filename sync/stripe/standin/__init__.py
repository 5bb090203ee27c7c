"""A Stripe stand-in for tests (docs/billing.md, "The Stripe stand-in").

No published stand-in covers Billing Meters, billing periods and thin events, so the tests
drive this one with the official SDK. Run it in-process (`StripeStandin`) or as a process:
`python -m sync.stripe.standin`.
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
