"""The wait strict requests share on one group commit: bounded, and cancelled for no one else."""

from __future__ import annotations

import asyncio

import pytest

from edge_node.usage.batch_wait import BatchWait


class TestBatchWait:
    async def test_resolves_as_the_commit_does(self) -> None:
        """Every request awaiting the wait gets the commit's result once it is durable."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = BatchWait(durable, timeout=5)
        waiters = [asyncio.ensure_future(_await(wait)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(waiter.done() for waiter in waiters)
        durable.set_result(7)
        assert await asyncio.gather(*waiters) == [7, 7, 7]

    async def test_a_failed_commit_fails_every_request(self) -> None:
        """The commit's error reaches each request of the commit."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = BatchWait(durable, timeout=5)
        durable.set_exception(OSError("I/O error"))
        for _ in range(2):
            with pytest.raises(OSError, match="I/O error"):
                await wait

    async def test_times_out_while_the_commit_is_pending(self) -> None:
        """A commit still pending after the timeout fails the wait with TimeoutError."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await BatchWait(durable, timeout=0.05)
        assert not durable.done()

    async def test_one_cancelled_request_does_not_end_the_wait_of_the_others(self) -> None:
        """Cancelling one request's task leaves the shared wait pending for the rest; the
        cancelled task ends once the commit is durable."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = BatchWait(durable, timeout=5)
        cancelled, other = (asyncio.ensure_future(_await(wait)) for _ in range(2))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        assert not wait.done()
        assert not other.done()
        durable.set_result(3)
        assert await other == 3
        with pytest.raises(asyncio.CancelledError):
            await cancelled


async def _await(wait: BatchWait) -> int:
    return await wait
