"""CreditStore: an API key's credits left, spent under the write lock of credits.sqlite."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from edge_node.tenants.credits import CreditStore
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
