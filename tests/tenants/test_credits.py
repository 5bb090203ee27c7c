"""CreditStore: an API key's credits left, spent under the write lock of credits.sqlite."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.tenants.credits import CreditDecision, CreditStore
from edge_node.tenants.model import KeyCredits

KEY = "k1"


class TestSpending:
    def test_credits_are_spent_to_zero_and_then_refused(self, tmp_path: Path) -> None:
        """A key granted 3 spends 2 then 1; the next unit is refused and nothing is taken."""
        with contextlib.closing(CreditStore.open(tmp_path)) as store:
            grant = KeyCredits(3)
            assert store.spend(KEY, grant, 2, 1000).remaining == 1
            assert store.spend(KEY, grant, 1, 1000).remaining == 0
            refused = store.spend(KEY, grant, 1, 1000)
            assert (refused.allowed, refused.remaining, refused.reset_seconds) == (False, 0, None)

    def test_two_connections_spend_from_one_balance(self, tmp_path: Path) -> None:
        """Worker processes each open the file; together they never spend more than it holds."""
        first, second = CreditStore.open(tmp_path), CreditStore.open(tmp_path)
        try:
            grant = KeyCredits(5)
            allowed = [store.spend(KEY, grant, 1, 1000).allowed for store in (first, second) * 4]
            assert allowed.count(True) == 5
        finally:
            first.close()
            second.close()

    def test_a_refill_sets_the_balance_back_each_period(self, tmp_path: Path) -> None:
        """With --refill 4 --refill-every 60s: spent to zero, the key holds 4 again a minute
        after its first spend, and the reset counts down to that moment."""
        with contextlib.closing(CreditStore.open(tmp_path)) as store:
            grant = KeyCredits(2, refill=4, refill_every_seconds=60)
            assert store.spend(KEY, grant, 2, 0).reset_seconds == 60
            assert not store.spend(KEY, grant, 1, 30_000).allowed
            refilled = store.spend(KEY, grant, 1, 61_000)
            assert (refilled.allowed, refilled.remaining, refilled.reset_seconds) == (True, 3, 59)

    def test_a_refund_goes_back_only_into_the_interval_it_was_taken_from(
        self, tmp_path: Path
    ) -> None:
        with contextlib.closing(CreditStore.open(tmp_path)) as store:
            grant = KeyCredits(2, refill=2, refill_every_seconds=60)
            taken = store.spend(KEY, grant, 1, 0)
            store.refund(KEY, 1, taken.refilled_at)
            assert store.balance(KEY, grant, 1000).remaining == 2
            late = store.spend(KEY, grant, 2, 1000)
            store.spend(KEY, grant, 1, 61_000)  # a refill: the balance is 2 - 1 anew
            store.refund(KEY, 2, late.refilled_at)
            assert store.balance(KEY, grant, 62_000).remaining == 1


class TestSpendingOnTheLoop:
    async def test_the_spends_of_one_loop_iteration_share_one_commit_and_one_balance(
        self, tmp_path: Path
    ) -> None:
        """Two workers' stores spending at once: each one's spends of a loop iteration are
        one transaction (one COMMIT, one fsync), and together they never spend more than
        the key holds."""
        first, second = CreditStore.open(tmp_path), CreditStore.open(tmp_path)
        statements: list[str] = []
        first._conn.set_trace_callback(statements.append)
        try:
            grant = KeyCredits(5)
            decisions = await asyncio.gather(
                *[store.spend_batched(KEY, grant, 1, 1000) for store in (first, second) * 4]
            )
            assert [d.allowed for d in decisions].count(True) == 5
            assert statements.count("COMMIT") == 1
            assert min(d.remaining for d in decisions) == 0
        finally:
            first.close()
            second.close()

    async def test_a_spend_durable_for_a_request_cancelled_meanwhile_is_given_back(
        self, tmp_path: Path
    ) -> None:
        """A request cancelled after its spend committed but before it resumed serves
        nothing: its units are given back."""
        store = CreditStore.open(tmp_path)
        grant = KeyCredits(3)
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[CreditDecision]] = []
        spend = store.spend

        def spend_then_cancel(
            key_id: str, grant: KeyCredits, units: int, now: int
        ) -> CreditDecision:
            loop.call_soon(tasks[0].cancel)  # runs after the commit, before the task resumes
            return spend(key_id, grant, units, now)

        store.spend = spend_then_cancel  # type: ignore[method-assign,assignment]
        try:
            tasks.append(asyncio.ensure_future(store.spend_batched(KEY, grant, 1, 1000)))
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await asyncio.sleep(0.05)  # the refund's commit
            assert store.balance(KEY, grant, 1000).remaining == 3
        finally:
            store.close()

    def test_worker_processes_spending_at_once_never_spend_more_than_the_key_holds(
        self, tmp_path: Path
    ) -> None:
        """Two processes, each spending one unit at a time in batches on its own loop, 300
        each against a grant of 400: 400 are allowed in all, and none is left."""
        program = (
            "import asyncio, sys\n"
            "from pathlib import Path\n"
            "from edge_node.tenants.credits import CreditStore\n"
            "from edge_node.tenants.model import KeyCredits\n"
            "async def main():\n"
            "    store = CreditStore.open(Path(sys.argv[1]))\n"
            "    allowed = 0\n"
            "    for _ in range(15):\n"
            "        spends = [store.spend_batched('k1', KeyCredits(400), 1, 1000)"
            " for _ in range(20)]\n"
            "        allowed += sum(d.allowed for d in await asyncio.gather(*spends))\n"
            "    store.close()\n"
            "    print(allowed)\n"
            "asyncio.run(main())\n"
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", program, str(tmp_path)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        allowed = [int(worker.communicate(timeout=60)[0]) for worker in workers]
        assert all(worker.returncode == 0 for worker in workers)
        assert sum(allowed) == 400
        with contextlib.closing(CreditStore.open(tmp_path)) as store:
            assert store.balance(KEY, KeyCredits(400), 1000).remaining == 0
