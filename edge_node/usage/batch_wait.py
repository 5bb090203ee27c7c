"""A bounded wait on one group commit, shared by every strict request whose event it carries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class BatchWait(asyncio.Future[int]):
    """Resolves as the group commit it follows does, or fails with TimeoutError `timeout`
    seconds after it was made while that commit is still pending (or not yet made).

    The requests whose events are appended together all await this one future: one future
    and one timer per batch of events, rather than a timeout and a shield per request. The
    wait is made with the batch's first event and follows the commit (`follow`) once the
    batch is appended, or fails with the append's error (`fail`). One request's task being
    cancelled must not end the wait of the others, so cancel() refuses: that task raises
    CancelledError when the wait is over (at most `timeout` seconds on), as it would behind
    asyncio.shield. `on_expire` runs when the wait runs out, before its waiters learn it; the
    wait lets go of it once over, so that a hook holding what holds the wait (the meter's
    batch) makes no reference cycle: a cycle per batch would be left to the garbage
    collector, whose collections, rare while serving (edge_node.http.collector), then stall
    the loop for tens of milliseconds.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        *,
        on_expire: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self.expired = False  # ran out before the commit was durable
        self._on_expire = on_expire
        self._timer = loop.call_later(timeout, self._expire)

    def follow(self, durable: asyncio.Future[int]) -> None:
        """Resolve as the group commit `durable` does."""
        durable.add_done_callback(self._settle)

    def fail(self, error: BaseException) -> None:
        """End the wait with `error` (the batch could not be appended)."""
        self._timer.cancel()
        self._on_expire = None
        if not self.done():
            self.set_exception(error)

    def cancel(self, msg: object = None) -> bool:
        """Refused: the wait belongs to every request of the commit (see the class)."""
        return False

    def _expire(self) -> None:
        if self.done():
            return
        self.expired = True
        hook, self._on_expire = self._on_expire, None
        try:
            if hook is not None:
                hook()
        finally:  # its waiters learn it whatever the hook did
            self.set_exception(TimeoutError())

    def _settle(self, durable: asyncio.Future[int]) -> None:
        self._timer.cancel()
        self._on_expire = None
        if self.done():
            return
        if durable.cancelled():
            asyncio.Future.cancel(self)
        elif (error := durable.exception()) is not None:
            self.set_exception(error)
        else:
            self.set_result(durable.result())
