"""Sharding: each tenant lives on one central database chosen by a stable hash of its id."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from sync.postgres import connect
from sync.shards import shard_for
from tests.sync.conftest import EdgeFactory


class TestShardFor:
    def test_the_mapping_is_pinned(self) -> None:
        """The hash never changes between releases: these tenants keep their shards."""
        ids = [
            "00000000-0000-0000-0000-000000000000",
            "0b7e6a4c-1111-4c55-9a53-5c1e0e8b7d41",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "3f8d7a4e-1b2c-4d5e-8f90-123456789abc",
            "6f1c7a52-3f0e-4c55-9a53-5c1e0e8b7d41",
        ]
        assert [shard_for(t, 2) for t in ids] == PINNED_TWO
        assert [shard_for(t, 7) for t in ids] == PINNED_SEVEN
        assert all(shard_for(t, 1) == 0 for t in ids)

    def test_tenants_spread_evenly(self) -> None:
        """Four thousand random tenants over four shards: each gets within 10% of a quarter.
        The ids come from a seeded generator, so the test is the same on every run."""
        rng = random.Random(20261207)
        ids = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(4000))
        counts = Counter(shard_for(tenant_id, 4) for tenant_id in ids)
        assert sorted(counts) == [0, 1, 2, 3]
        assert all(900 <= n <= 1100 for n in counts.values()), counts

    def test_no_shards_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            shard_for(str(uuid.uuid4()), 0)


PINNED_TWO = [0, 0, 0, 1, 0]
PINNED_SEVEN = [1, 0, 3, 3, 4]


class TestTwoShards:
    async def test_each_tenant_syncs_with_its_own_shard_only(
        self, make_edge: EdgeFactory, centrals: tuple[str, str]
    ) -> None:
        """Tenants of edge A spread over two databases: each tenant's registry rows and ratings
        are on its shard and absent from the other; edge B, syncing with both, gets them all."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        tenants: list[str] = []
        while {shard_for(t, 2) for t in tenants} != {0, 1} or len(tenants) < 4:
            tenant, _ = a.registry.create_tenant(f"t{len(tenants)}")
            tenants.append(tenant.tenant_id)
            a.rate(tenant.tenant_id, "u1", "book", 1 + len(tenants) % 5)
        reports = await a.sync(*centrals)
        assert sum(r.uploaded for r in reports) == len(tenants)

        for index, dsn in enumerate(centrals):
            conn = await connect(dsn)
            try:
                for table in ("tenants", "api_keys", "ratings"):
                    held = {
                        r["t"]
                        for r in await conn.fetch(
                            f"SELECT DISTINCT tenant_id::text AS t FROM {table}"
                        )
                    }
                    assert held == {t for t in tenants if shard_for(t, 2) == index}, table
            finally:
                await conn.close()

        await b.sync(*centrals)
        assert {t.tenant_id for t in b.registry.list_tenants()} == set(tenants)
        for t in tenants:
            assert b.rows(t) == a.rows(t)
