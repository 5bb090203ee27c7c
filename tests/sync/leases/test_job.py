"""The lease job (sync/leases/job.py) of a node with a real PostgreSQL: it claims, renews when
low, marks leases cut off when the central database is out of reach and reports what was
served meanwhile once it is back, and gives back idle leases, locally first."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from edge_node import clock
from edge_node.config import CentralConfig, PlanQuotaConfig, QuotasConfig
from edge_node.errors import TransientSyncError
from edge_node.tenants.registry import TenantRegistry
from edge_node.usage.leases import Lease, boot_id, boottime_ns, limit, open_leases, read_leases
from edge_node.usage.served import SERVED_DIR, ServedCounter
from sync.leases.job import LeaseJob
from sync.postgres import Connection
from tests.postgres import free_port
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge, TcpProxy

# payg tenants may serve 5 units past their lease once cut off; flat ones refuse.
QUOTAS = QuotasConfig(payg=PlanQuotaConfig(partition_policy="local", partition_allowance=5))
JobFactory = Callable[..., LeaseJob]


@pytest.fixture
async def make_job() -> AsyncIterator[JobFactory]:
    """Lease jobs of edge nodes, closed after the test."""
    made: list[LeaseJob] = []

    def make(
        edge: Edge,
        dsn: str,
        quotas: QuotasConfig = QUOTAS,
        *,
        registry: TenantRegistry | None = None,
        clock_ns: Callable[[], int] = boottime_ns,
        max_units: int = 1,
    ) -> LeaseJob:
        """`edge`'s job, reading the tenants of `registry` (default: the edge's own)."""
        central = CentralConfig(dsns=(dsn,))
        registry = registry or edge.registry
        job = LeaseJob(
            central, quotas, registry, edge.data_dir, edge.node_id,
            clock_ns=clock_ns, max_units=max_units,
        )  # fmt: skip
        made.append(job)
        return job

    yield make
    for job in made:
        await job.close()


@pytest.fixture
def served() -> Iterator[Callable[[Edge, str, int], None]]:
    """Counts units served to a tenant now, in the node's served-counts file, as its meter
    does."""
    counters: dict[str, ServedCounter] = {}

    def serve(edge: Edge, tenant_id: str, units: int) -> None:
        path = edge.data_dir / SERVED_DIR / "worker-0.counts"
        if str(path) not in counters:
            counters[str(path)] = ServedCounter(path)
        counters[str(path)].add(tenant_id, clock.now_ms(), units)

    yield serve
    for counter in counters.values():
        counter.close()


def block_tenant(edge: Edge, plan: str = "payg", quota: int = 100) -> str:
    tenant, _ = edge.registry.create_tenant("acme", plan=plan, quota=quota, quota_policy="block")  # type: ignore[arg-type]
    return tenant.tenant_id


def leases(job: LeaseJob) -> dict[str, Lease]:
    """What the node's leases.sqlite holds, read from a connection of its own."""
    with contextlib.closing(open_leases(job.data_dir)) as conn:
        return read_leases(conn)


async def books(db: Connection, tenant_id: str) -> dict[str, tuple[int, int]]:
    """The central quota_leases rows of a tenant: node -> (granted, spent)."""
    rows = await db.fetch(
        "SELECT node_id, granted, spent FROM quota_leases WHERE tenant_id = $1", tenant_id
    )
    return {row["node_id"]: (row["granted"], row["spent"]) for row in rows}


class TestClaims:
    async def test_a_first_run_claims_a_share_and_writes_a_live_lease(
        self, make_edge: EdgeFactory, make_job: JobFactory, central: str, db: Connection
    ) -> None:
        """A tenant with a `block` allowance of 100 gets `lease_share` (a tenth) of it, for
        this boot, until `lease_seconds` from now; the central books say the same."""
        edge = make_edge("edge-a")
        tenant = block_tenant(edge)
        edge.registry.create_tenant("unlimited")  # no allowance: no lease
        before = boottime_ns()
        job = make_job(edge, central)
        await job.run()
        [held] = leases(job).values()
        assert (held.tenant_id, held.allowance) == (tenant, 100)
        assert (held.granted, held.node_spent, held.fleet_spent) == (10, 0, 0)
        assert (held.exhausted, held.cut_off, held.boot_id) == (False, False, boot_id())
        assert before + 60 * 10**9 <= held.valid_until_ns <= boottime_ns() + 60 * 10**9
        assert await books(db, tenant) == {"edge-a": (10, 0)}

    async def test_a_lease_is_renewed_with_the_spend_when_it_runs_low(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
        db: Connection,
    ) -> None:
        """7 of 10 left is not low (more than half a share): nothing is claimed; 4 left is,
        and the claim reports the 6 served and adds a share."""
        edge = make_edge("edge-a")
        tenant = block_tenant(edge)
        job = make_job(edge, central)
        await job.run()
        served(edge, tenant, 3)
        await job.run()
        assert (leases(job)[tenant].granted, await books(db, tenant)) == (10, {"edge-a": (10, 0)})
        served(edge, tenant, 3)
        await job.run()
        renewed = leases(job)[tenant]
        assert (renewed.granted, renewed.node_spent, renewed.fleet_spent) == (20, 6, 6)
        assert await books(db, tenant) == {"edge-a": (20, 6)}

    async def test_the_fleet_says_exhausted_once_everything_is_granted_and_spent(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
    ) -> None:
        """With a share of everything, the first node takes the whole allowance. The second,
        granted nothing, is not told the allowance is used up while the first holds it
        unspent (its spent lease answers 503, not 429: the units may come back); once the
        first has reported it all spent, it is (429)."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenant = block_tenant(a)
        everything = QuotasConfig(lease_share=1.0)
        now = [boottime_ns()]
        await (first := make_job(a, central, everything)).run()
        second = make_job(b, central, everything, registry=a.registry, clock_ns=lambda: now[0])
        await second.run()
        assert (leases(first)[tenant].granted, leases(first)[tenant].exhausted) == (100, True)
        assert (leases(second)[tenant].granted, leases(second)[tenant].exhausted) == (0, False)
        served(a, tenant, 100)
        await first.run()  # low and spent from: claims, reporting the 100
        now[0] += 2 * 10**9  # past the second node's retry while units were held elsewhere
        await second.run()
        assert (leases(second)[tenant].granted, leases(second)[tenant].exhausted) == (0, True)

    async def test_a_lease_always_holds_one_request_of_the_costliest_operation(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
    ) -> None:
        """With 5-unit requests and a tenth of 20 being 2, a lease of 2 could never serve one:
        the job claims 5 at least, and claims again once fewer than 5 are left."""
        edge = make_edge("edge-a")
        tenant = block_tenant(edge, quota=20)
        job = make_job(edge, central, max_units=5)
        await job.run()
        assert leases(job)[tenant].granted == 5
        served(edge, tenant, 5)
        await job.run()
        lease = leases(job)[tenant]
        assert lease.granted - lease.node_spent >= 5

    async def test_a_node_that_lost_its_counts_does_not_serve_again_what_it_served(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
        db: Connection,
        tmp_path: Path,
    ) -> None:
        """The central database recorded 8 units served by edge-a; edge-a comes back with an
        empty data directory (counting 0): its new lease is cut by the 8 it no longer counts,
        so what it serves stays within what the fleet granted it."""
        first = make_edge("edge-a")
        tenant = block_tenant(first)
        job = make_job(first, central)
        await job.run()
        served(first, tenant, 8)
        await job.run()  # 2 of 10 left is low: the claim reports the 8
        before, reported = (await books(db, tenant))["edge-a"]
        assert reported == 8
        restored = Edge.open(tmp_path / "edge-a-restored", "edge-a")
        try:
            await make_job(restored, central, registry=first.registry).run()
            lease = leases(make_job(restored, central, registry=first.registry))[tenant]
        finally:
            restored.close()
        granted, spent = (await books(db, tenant))["edge-a"]
        assert (granted, spent) == (before + 10, 8)  # a share more; the spend is kept
        assert (lease.granted, lease.node_spent) == (granted - 8, 0)


class TestPartition:
    async def test_cut_off_leases_follow_the_plan_policy_and_the_spend_is_reported_after(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
        db: Connection,
    ) -> None:
        """With the link cut, a run that must claim fails and marks the shard's leases cut
        off: the `local` tenant may then serve 5 units past its lease, the `refuse` one
        none (though it did not need a claim). Once the link is back, the next run reports
        everything served meanwhile: with a claim where the lease is low, with a renewal
        where it is not."""
        edge = make_edge("edge-a")
        local, refuse = block_tenant(edge, "payg"), block_tenant(edge, "flat")
        proxy = TcpProxy(urllib.parse.urlsplit(central).port or 0, free_port())
        await proxy.heal()
        try:
            job = make_job(edge, proxy.dsn(central))
            await job.run()
            await proxy.cut()
            served(edge, local, 8)  # running low: the run must claim
            served(edge, refuse, 2)
            with pytest.raises(TransientSyncError):
                await job.run()
            cut = leases(job)
            assert [(cut[t].cut_off, cut[t].granted) for t in (local, refuse)] == [(True, 10)] * 2
            assert (cut[local].partition_units, cut[refuse].partition_units) == (5, 0)
            start, now = cut[local].period_start_ms, boottime_ns()
            assert limit(cut[local], start, now).units == 15
            assert limit(cut[refuse], start, now).units == 10
            served(edge, local, 6)  # past its lease, within the partition allowance
            await proxy.heal()
            await job.run()
        finally:
            await proxy.close()
        back = leases(job)
        # local spent 14 of 10 and claimed 12 more (twice the 6 served since the last run,
        # more than a tenth of what is left); refuse had 8 left: renewed only.
        assert (back[local].cut_off, back[local].node_spent, back[local].granted) == (False, 14, 26)
        assert (back[refuse].cut_off, back[refuse].node_spent, back[refuse].granted) == (
            False,
            2,
            10,
        )
        assert await books(db, local) == {"edge-a": (26, 14)}
        assert await books(db, refuse) == {"edge-a": (10, 2)}

    async def test_a_node_cut_off_before_its_first_claim_holds_only_the_partition_units(
        self, make_edge: EdgeFactory, make_job: JobFactory
    ) -> None:
        """Nothing claimed yet and no central database to claim from: `local` serves its 5
        units, `refuse` nothing."""
        edge = make_edge("edge-a")
        local, refuse = block_tenant(edge, "payg"), block_tenant(edge, "flat")
        job = make_job(edge, f"postgresql://edge@127.0.0.1:{free_port()}/central")
        with pytest.raises(TransientSyncError):
            await job.run()
        cut = leases(job)
        assert [(cut[t].cut_off, cut[t].granted) for t in (local, refuse)] == [(True, 0)] * 2
        start, now = cut[local].period_start_ms, boottime_ns()
        assert limit(cut[local], start, now).units == 5
        assert limit(cut[refuse], start, now).units == 0

    async def test_the_partition_allowance_is_the_periods_not_each_cuts(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
    ) -> None:
        """A node that served its 5 partition units past its lease during one cut has used
        them for the period: cut off again, with the fleet exhausted, it may serve nothing
        more past what it was granted (else every cut would add 5 to the overshoot)."""
        now = [boottime_ns()]
        quotas = QuotasConfig(lease_share=1.0, payg=QUOTAS.payg)
        edge = make_edge("edge-a")
        tenant = block_tenant(edge, quota=10)
        proxy = TcpProxy(urllib.parse.urlsplit(central).port or 0, free_port())
        await proxy.heal()
        try:
            job = make_job(edge, proxy.dsn(central), quotas, clock_ns=lambda: now[0])
            await job.run()  # all 10 granted: the fleet is exhausted
            served(edge, tenant, 10)
            await proxy.cut()
            with pytest.raises(TransientSyncError):
                await job.run()
            first = leases(job)[tenant]
            assert limit(first, first.period_start_ms, now[0]).units == 15
            served(edge, tenant, 5)  # the partition allowance, past the lease
            await proxy.heal()
            await job.run()
            back = leases(job)[tenant]
            assert (back.cut_off, back.granted, back.node_spent, back.exhausted) == (
                False,
                15,
                15,
                True,
            )
            await proxy.cut()
            now[0] += 10 * 10**9  # past the exhausted fleet's retry: the run must claim
            with pytest.raises(TransientSyncError):
                await job.run()
        finally:
            await proxy.close()
        again = leases(job)[tenant]
        assert (again.cut_off, again.partition_units, again.partition_used) == (True, 5, 5)
        assert limit(again, again.period_start_ms, now[0]).units == 15


class TestIdleLeases:
    async def test_an_idle_lease_is_cut_locally_then_given_back_centrally(
        self,
        make_edge: EdgeFactory,
        make_job: JobFactory,
        served: Callable[[Edge, str, int], None],
        central: str,
        db: Connection,
    ) -> None:
        """Nothing spent for `lease_idle_seconds`: the local lease is cut to the spend and a
        unit at once, while the central database still counts it all; two lease intervals
        later (the workers have seen the cut) the rest goes back to the fleet."""
        now = [boottime_ns()]
        quotas = QuotasConfig(lease_idle_seconds=1.0, lease_interval_seconds=0.5)
        edge = make_edge("edge-a")
        tenant = block_tenant(edge)
        job = make_job(edge, central, quotas, clock_ns=lambda: now[0])
        await job.run()
        served(edge, tenant, 2)
        now[0] += 10**9 // 2
        await job.run()  # spent from half a second ago: not idle
        now[0] += 10**9 // 2
        await job.run()
        assert leases(job)[tenant].granted == 10
        now[0] += 10**9 // 2
        await job.run()  # a second with nothing spent
        assert (leases(job)[tenant].granted, await books(db, tenant)) == (3, {"edge-a": (10, 0)})
        now[0] += 10**9 // 2
        await job.run()  # one interval: a worker may still be admitting from the old lease
        assert await books(db, tenant) == {"edge-a": (10, 0)}
        now[0] += 10**9 // 2
        await job.run()
        assert await books(db, tenant) == {"edge-a": (3, 2)}
        back = leases(job)[tenant]
        assert (back.granted, back.node_spent, back.cut_off) == (3, 2, False)
