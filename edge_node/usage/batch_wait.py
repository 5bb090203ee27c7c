"""A bounded wait on one group commit, shared by every strict request whose event it carries."""

from __future__ import annotations

import asyncio


class BatchWait(asyncio.Future[int]):
    """Resolves as the group commit `durable` does, or fails with TimeoutError after `timeout`
    seconds while the commit is still pending.

    The requests of one group commit all await this one future: one future and one timer per
    commit, rather than a timeout and a shield per request. One request's task being
    cancelled must not end the wait of the others, so cancel() refuses: that task raises
    CancelledError when the wait is over (at most `timeout` seconds on), as it would behind
    asyncio.shield.
    """

    def __init__(self, durable: asyncio.Future[int], timeout: float) -> None:
        loop = durable.get_loop()
        super().__init__(loop=loop)
        self._timer = loop.call_later(timeout, self._expire)
        durable.add_done_callback(self._settle)

    def cancel(self, msg: object = None) -> bool:
        """Refused: the wait belongs to every request of the commit (see the class)."""
        return False

    def _expire(self) -> None:
        if not self.done():
            self.set_exception(TimeoutError())

    def _settle(self, durable: asyncio.Future[int]) -> None:
        self._timer.cancel()
        if self.done():
            return
        if durable.cancelled():
            asyncio.Future.cancel(self)
        elif (error := durable.exception()) is not None:
            self.set_exception(error)
        else:
            self.set_result(durable.result())
