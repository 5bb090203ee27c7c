"""The billing ledger for the event loop: its calls run on a thread of their own."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from sync.billing.ledger import BillingLedger
from sync.billing.periods import Stamp
from sync.stripe.periods import SubscriptionPeriods

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncLedger:
    """The ledger for the event loop: its calls run, one at a time, on a thread of their own,
    so its fsyncs never stall the loop and a cancelled caller never overlaps the next call."""

    def __init__(self, ledger: BillingLedger) -> None:
        self.ledger = ledger
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-ledger")

    async def run(self, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args, **kwargs))

    async def set_aside(self, batches: Sequence[tuple[str, str]]) -> None:
        await self.run(self.ledger.set_aside, batches)

    async def mark_sent(self, identifier: str, now_us: int, stamp: Stamp) -> tuple[int, bool]:
        return await self.run(self.ledger.mark_sent, identifier, now_us, stamp)

    async def unmark_sent(self, identifier: str, attempt: int) -> None:
        await self.run(self.ledger.unmark_sent, identifier, attempt)

    async def confirm(self, identifier: str, now_us: int) -> None:
        await self.run(self.ledger.confirm, identifier, now_us)

    async def send_afresh(self, identifiers: Sequence[str]) -> None:
        await self.run(self.ledger.send_afresh, identifiers)

    async def record_periods(
        self, customer_id: str, periods: SubscriptionPeriods, now: float
    ) -> None:
        await self.run(self.ledger.record_periods, customer_id, periods, now)

    async def close(self) -> None:
        """Wait for the call in progress, then close the connection."""
        await self.run(self.ledger.close)
        self._thread.shutdown(wait=False)
