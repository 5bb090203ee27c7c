"""The wait strict requests share on one group commit: bounded, and cancelled for no one else."""

from __future__ import annotations

import asyncio

import pytest

from edge_node.usage.batch_wait import BatchWait


class TestBatchWait:
    async def test_resolves_as_the_commit_does(self) -> None:
        """Every request awaiting the wait gets the commit's result once it is durable."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = following(durable, timeout=5)
        waiters = [asyncio.ensure_future(_await(wait)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(waiter.done() for waiter in waiters)
        durable.set_result(7)
        assert await asyncio.gather(*waiters) == [7, 7, 7]

    async def test_a_failed_commit_fails_every_request(self) -> None:
        """The commit's error reaches each request of the commit."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = following(durable, timeout=5)
        durable.set_exception(OSError("I/O error"))
        for _ in range(2):
            with pytest.raises(OSError, match="I/O error"):
                await wait

    async def test_times_out_while_the_commit_is_pending(self) -> None:
        """A commit still pending after the timeout fails the wait with TimeoutError."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await following(durable, timeout=0.05)
        assert not durable.done()

    async def test_runs_its_expiry_hook_before_its_waiters_learn(self) -> None:
        """`on_expire` runs when the wait runs out, before any request sees TimeoutError,
        and the wait says it expired; a commit landing later changes nothing."""
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        wait = BatchWait(loop, 0.05, on_expire=lambda: seen.append("expired"))
        durable: asyncio.Future[int] = loop.create_future()
        wait.follow(durable)

        async def request() -> None:
            try:
                await wait
            except TimeoutError:
                seen.append("timed out")

        await request()
        assert seen == ["expired", "timed out"]
        assert wait.expired
        durable.set_result(1)
        await asyncio.sleep(0)
        assert seen == ["expired", "timed out"]

    async def test_a_failing_expiry_hook_still_ends_the_wait(self) -> None:
        """Whatever the hook raises (reported by the loop), the requests learn the wait ran
        out rather than wait on."""
        loop = asyncio.get_running_loop()
        reported: list[object] = []
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))

        def broken() -> None:
            raise OSError("counts file unreadable")

        try:
            wait = BatchWait(loop, 0.05, on_expire=broken)
            await asyncio.sleep(0.2)
        finally:
            loop.set_exception_handler(None)
        assert wait.done()
        assert isinstance(wait.exception(), TimeoutError)
        assert [str(error) for error in reported] == ["counts file unreadable"]

    async def test_a_batch_that_could_not_be_appended_fails_its_requests(self) -> None:
        """`fail` ends the wait of every request with the append's error, before the timer."""
        wait = BatchWait(asyncio.get_running_loop(), 5)
        wait.fail(OSError("queue closed"))
        with pytest.raises(OSError, match="queue closed"):
            await wait
        assert not wait.expired

    async def test_one_cancelled_request_does_not_end_the_wait_of_the_others(self) -> None:
        """Cancelling one request's task leaves the shared wait pending for the rest; the
        cancelled task ends once the commit is durable."""
        durable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        wait = following(durable, timeout=5)
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


def following(durable: asyncio.Future[int], *, timeout: float) -> BatchWait:
    """A wait made now that follows the group commit `durable`."""
    wait = BatchWait(durable.get_loop(), timeout)
    wait.follow(durable)
    return wait


async def _await(wait: BatchWait) -> int:
    return await wait
