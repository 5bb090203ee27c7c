"""Claims on the central books of fleet-wide allowances (sync/leases/central.py), on a real
PostgreSQL and on Citus: the grants never pass the allowance, whatever the concurrency; a
lapsed lease is taken back only past its deadline and grace; spend is never lowered."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from edge_node.clock import now_ms
from edge_node.errors import TransientSyncError
from edge_node.usage.quotas import calendar_month
from sync.leases.central import Claim, claim
from sync.postgres import Connection, connect

PERIOD = calendar_month(now_ms())[0]  # the central database refuses claims for another month


async def _claim(
    dsn: str, tenant: str, node: str, *, spent: int = 0, wanted: int = 10, **kw: object
) -> Claim:
    connection = await connect(dsn)
    try:
        return await claim(
            connection,
            tenant_id=tenant,
            period_start=PERIOD,
            node_id=node,
            allowance=int(kw.pop("allowance", 100)),  # type: ignore[call-overload]
            spent=spent,
            wanted=wanted,
            lease_seconds=float(kw.pop("lease_seconds", 60)),  # type: ignore[arg-type]
            keep=kw.pop("keep", None),  # type: ignore[arg-type]
        )
    finally:
        await connection.close()


async def _books(dsn: str, tenant: str) -> dict[str, tuple[int, int]]:
    connection: Connection = await connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT node_id, granted, spent FROM quota_leases WHERE tenant_id = $1", tenant
        )
    finally:
        await connection.close()
    return {row["node_id"]: (row["granted"], row["spent"]) for row in rows}


class TestClaims:
    async def test_concurrent_claims_of_many_nodes_never_grant_past_the_allowance(
        self, any_central: str
    ) -> None:
        tenant = str(uuid.uuid4())
        claims = await asyncio.gather(
            *(_claim(any_central, tenant, f"node-{i}", wanted=7) for i in range(20))
        )
        granted = sum(c.granted for c in claims)
        assert granted == 100  # 14 claims of 7 and one of 2; the rest get nothing
        assert sorted(c.granted for c in claims).count(0) == 5
        assert sum(g for g, _ in (await _books(any_central, tenant)).values()) == 100
        # All granted, but held unspent by other nodes: not used up yet (they may give back).
        again = await _claim(any_central, tenant, "node-0", spent=7, wanted=7)
        assert (again.granted, again.exhausted) == (7, False)
        # Once every node reported its grant spent, the answer says so, to every claimer.
        for claimed, index in zip(claims, range(20), strict=True):
            await _claim(any_central, tenant, f"node-{index}", spent=claimed.granted, wanted=0)
        assert (await _claim(any_central, tenant, "node-19", wanted=7)).exhausted

    async def test_a_renewal_reports_spend_and_grants_from_what_is_left(
        self, any_central: str
    ) -> None:
        tenant = str(uuid.uuid4())
        first = await _claim(any_central, tenant, "a", wanted=60)
        assert (first.granted, first.fleet_spent, first.exhausted) == (60, 0, False)
        other = await _claim(any_central, tenant, "b", wanted=60)
        assert (other.granted, other.exhausted) == (40, False)  # a holds 60 unspent
        renewed = await _claim(any_central, tenant, "a", spent=55, wanted=10)
        assert (renewed.granted, renewed.fleet_spent, renewed.exhausted) == (60, 55, False)
        spent_b = await _claim(any_central, tenant, "b", spent=40, wanted=10)
        assert (spent_b.granted, spent_b.exhausted) == (40, False)  # a still holds 5
        spent_a = await _claim(any_central, tenant, "a", spent=60, wanted=10)
        assert (spent_a.fleet_spent, spent_a.exhausted) == (100, True)
        # A report of less than was reported before never lowers the spend.
        await _claim(any_central, tenant, "a", spent=3, wanted=0)
        assert (await _books(any_central, tenant))["a"] == (60, 60)

    async def test_giving_back_returns_the_unspent_units_to_the_fleet(
        self, any_central: str
    ) -> None:
        tenant = str(uuid.uuid4())
        await _claim(any_central, tenant, "a", wanted=80)
        returned = await _claim(any_central, tenant, "a", spent=30, wanted=0, keep=1)
        assert returned.granted == 31
        taken = await _claim(any_central, tenant, "b", wanted=100)
        # a kept a unit for its next request, and is idle: the allowance counts as used up.
        assert (taken.granted, taken.exhausted) == (69, True)
        # Once a asks for units again (or spends), it is no longer idle: its unit counts.
        await _claim(any_central, tenant, "a", spent=30, wanted=5)
        assert not (await _claim(any_central, tenant, "b", spent=60, wanted=1)).exhausted

    async def test_spend_past_the_grant_is_counted_against_the_fleet(
        self, any_central: str
    ) -> None:
        """A node cut off under the `local` partition policy served past its lease: its report
        raises what the fleet has committed, and the others get that much less."""
        tenant = str(uuid.uuid4())
        await _claim(any_central, tenant, "a", wanted=10)
        over = await _claim(any_central, tenant, "a", spent=25, wanted=0)
        assert over.granted == 25
        rest = await _claim(any_central, tenant, "b", wanted=100)
        assert rest.granted == 75

    async def test_a_lapsed_lease_is_taken_back_only_past_its_deadline_and_grace(
        self, any_central: str
    ) -> None:
        tenant = str(uuid.uuid4())
        first = await _claim(any_central, tenant, "a", spent=4, wanted=50, lease_seconds=60)
        assert first.granted == 54  # what it had spent (under a partition policy), and 50
        live = await _claim(any_central, tenant, "b", wanted=100)
        assert (live.granted, live.reclaimed) == (46, 0)
        connection = await connect(any_central)
        try:  # a's deadline passed 4 s ago: within the grace, still a's
            await connection.execute(
                "UPDATE quota_leases SET expires_at = now() - interval '4 s'"
                " WHERE tenant_id = $1 AND node_id = 'a'",
                tenant,
            )
            assert (await _claim(any_central, tenant, "b", spent=50, wanted=100)).reclaimed == 0
            await connection.execute(
                "UPDATE quota_leases SET expires_at = now() - interval '6 s'"
                " WHERE tenant_id = $1 AND node_id = 'a'",
                tenant,
            )
        finally:
            await connection.close()
        past = await _claim(any_central, tenant, "b", spent=50, wanted=100)
        assert (past.reclaimed, past.granted) == (50, 96)  # a keeps the 4 it reported spent
        assert (await _books(any_central, tenant))["a"] == (4, 4)


class TestRefusals:
    async def test_a_claim_for_a_month_the_central_clock_is_not_in_is_refused(
        self, central: str
    ) -> None:
        """A node whose clock runs a month ahead (or behind) cannot take that month's
        allowance: the central database's own clock decides the period."""
        connection = await connect(central)
        try:
            for month in (PERIOD - 31 * 86_400_000, PERIOD + 32 * 86_400_000):
                with pytest.raises(TransientSyncError, match="check both clocks"):
                    await claim(
                        connection, tenant_id=str(uuid.uuid4()), node_id="a",
                        period_start=calendar_month(month)[0], allowance=10, spent=0,
                        wanted=1, lease_seconds=60,
                    )  # fmt: skip
        finally:
            await connection.close()

    async def test_a_deleted_tenant_gets_nothing_and_leaves_no_rows(self, central: str) -> None:
        """A claim arriving after the tenant's deletion grants nothing, says the allowance is
        used up, and makes no row again (the deletion took the tenant's leases with it)."""
        tenant = str(uuid.uuid4())
        await _claim(central, tenant, "a", wanted=10)
        connection = await connect(central)
        try:
            await connection.execute(
                "INSERT INTO tenant_deletions (tenant_id, deleted_at) VALUES ($1, 1)", tenant
            )
            assert await _books(central, tenant) == {}
            after = await _claim(central, tenant, "a", spent=3, wanted=10)
            assert (after.granted, after.exhausted) == (0, True)
            assert await _books(central, tenant) == {}
            periods = "SELECT count(*) FROM quota_periods WHERE tenant_id = $1"
            assert await connection.fetchval(periods, tenant) == 0
        finally:
            await connection.close()
