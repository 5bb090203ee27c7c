"""Time in the stand-in: its own clock (wall time plus an offset tests move) and Stripe's test
clocks (`/v1/test_helpers/test_clocks`), which hold a customer's billing time frozen until
they are advanced.

A test clock answers as Stripe documents: created `ready` at `frozen_time`; an advance must
move forward and at most two intervals of the shortest subscription on the clock (two years
when it has none); it returns at once with `status: "advancing"` and
`status_details.advancing.target_frozen_time`, and becomes `ready` at the target only once
everything due on the way (period ends, invoices, finalizations) has happened, in the
background (sync/stripe/standin/engine.py). A clock holds at most three customers; deleting
it deletes them and cancels their subscriptions; it is deleted by itself `deletes_after`
(seven days after it was created, as the API reference's example shows).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.stripe.standin.faults import StripeFault, missing, no_such

DAY = 86_400
TEST_CLOCK_LIFETIME_SECONDS = 7 * DAY
TEST_CLOCK_CUSTOMER_LIMIT = 3
NO_SUBSCRIPTION_ADVANCE_LIMIT_SECONDS = 2 * 366 * DAY  # "two years"


class StandinClock:
    """Wall-clock time plus an offset tests move, to jump past the 24-hour and 35-day rules
    and past billing periods of customers that have no test clock."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class TestClock:
    """One `test_helpers.test_clock`; `target` is set while it advances."""

    __test__ = False  # not a pytest class, whatever its name

    id: str
    created: int
    frozen_time: int
    name: str | None
    target: int | None = None
    customers: list[str] = field(default_factory=list)

    def to_stripe(self) -> dict[str, Any]:
        advancing = None if self.target is None else {"target_frozen_time": self.target}
        return {
            "id": self.id,
            "object": "test_helpers.test_clock",
            "created": self.created,
            "deletes_after": self.created + TEST_CLOCK_LIFETIME_SECONDS,
            "frozen_time": self.frozen_time,
            "livemode": False,
            "name": self.name,
            "status": "ready" if self.target is None else "advancing",
            "status_details": {"advancing": advancing} if advancing else {},
        }


class TestClocks:
    """The account's test clocks, keyed by id."""

    __test__ = False

    def __init__(self) -> None:
        self.clocks: dict[str, TestClock] = {}

    def create(self, form: Mapping[str, Any], now: float) -> TestClock:
        if "frozen_time" not in form:
            raise missing("frozen_time")
        name = form.get("name")
        if name is not None and len(str(name)) > 300:
            raise StripeFault(400, "Invalid name: must be at most 300 characters", param="name")
        clock = TestClock(
            f"clock_{secrets.token_hex(12)}", int(now), _integer(form, "frozen_time"), name
        )
        self.clocks[clock.id] = clock
        return clock

    def get(self, clock_id: str, param: str | None = None) -> TestClock:
        clock = self.clocks.get(clock_id)
        if clock is None:
            raise no_such("test_helpers.test_clock", clock_id, param)
        return clock

    def listed(self) -> list[TestClock]:
        return sorted(reversed(self.clocks.values()), key=lambda c: c.created, reverse=True)

    def expire(self, now: float) -> list[TestClock]:
        """Clocks past `deletes_after`: removed here, returned so their customers go too."""
        gone = [c for c in self.clocks.values() if now >= c.created + TEST_CLOCK_LIFETIME_SECONDS]
        for clock in gone:
            del self.clocks[clock.id]
        return gone

    def attach(self, clock_id: str, customer_id: str) -> None:
        clock = self.get(clock_id, param="test_clock")
        if len(clock.customers) >= TEST_CLOCK_CUSTOMER_LIMIT:
            raise StripeFault(
                400,
                f"You can't add more than {TEST_CLOCK_CUSTOMER_LIMIT} customers to a test clock.",
                param="test_clock",
            )
        clock.customers.append(customer_id)

    def start_advance(self, clock: TestClock, form: Mapping[str, Any], limit: int | None) -> None:
        """Check an advance to `frozen_time` and mark the clock advancing; `limit` is two
        intervals of the shortest subscription on the clock, in seconds (None: it has none)."""
        if "frozen_time" not in form:
            raise missing("frozen_time")
        target = _integer(form, "frozen_time")
        if clock.target is not None:
            raise StripeFault(
                400,
                f"Test clock {clock.id} is currently advancing; wait until it is ready.",
                param="frozen_time",
            )
        if target <= clock.frozen_time:
            raise StripeFault(
                400,
                "The frozen_time must be after the test clock's current frozen time "
                f"({clock.frozen_time}).",
                param="frozen_time",
            )
        bound = clock.frozen_time + (
            NO_SUBSCRIPTION_ADVANCE_LIMIT_SECONDS if limit is None else limit
        )
        if target > bound:
            what = "two intervals of the shortest subscription" if limit else "two years"
            raise StripeFault(
                400,
                f"Cannot advance the test clock more than {what} in the future: the "
                f"frozen_time must be at most {bound}.",
                param="frozen_time",
            )
        clock.target = target


def _integer(form: Mapping[str, Any], param: str) -> int:
    try:
        return int(str(form[param]))
    except ValueError:
        raise StripeFault(400, f"Invalid integer: {form[param]}", param=param) from None
