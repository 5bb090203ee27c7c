"""Property: whatever sequence of writes, deletes and downloaded changes a tenant sees, every
score matches its rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node.rating.model import ItemScore, RatingInput
from edge_node.rating.replication import RatingRow, rating_id
from edge_node.rating.store import TenantStores

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"
USERS = st.sampled_from(["ana", "bo", "cy", "dee"])
ITEMS = st.sampled_from(["apple", "pear", "fig"])

operations = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), USERS, ITEMS, st.integers(1, 5)),
        st.tuples(st.just("delete"), USERS, ITEMS),
        st.tuples(st.just("erase"), USERS),
        st.tuples(st.just("remote"), USERS, ITEMS, st.integers(1, 5), st.booleans()),
    ),
    max_size=60,
)


def expected_scores(model: dict[tuple[str, str], int]) -> dict[str, ItemScore]:
    histograms: dict[str, list[int]] = {}
    for (_, item), score in model.items():
        histograms.setdefault(item, [0] * 5)[score - 1] += 1
    return {
        item: ItemScore(item, sum(h), sum((i + 1) * n for i, n in enumerate(h)), tuple(h))
        for item, h in histograms.items()
    }


class TestScoreAggregates:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(operations)
    def test_scores_equal_a_recount_of_the_rows(self, ops: list[tuple]) -> None:
        """After random upserts, deletes, erasures and downloaded changes, each stored score
        equals one recomputed."""
        with tempfile.TemporaryDirectory() as directory:
            stores = TenantStores(Path(directory) / "tenants", node_id="n1")  # keys beside it
            store = stores.get(TENANT)
            model: dict[tuple[str, str], int] = {}
            for step, op in enumerate(ops):
                if op[0] == "upsert":
                    _, user, item, score = op
                    store.upsert(RatingInput(user, item, score, "c"))
                    model[(user, item)] = score
                elif op[0] == "delete":
                    _, user, item = op
                    deleted = store.delete(rating_id(TENANT, user, item))
                    assert deleted == ((user, item) in model)
                    model.pop((user, item), None)
                elif op[0] == "remote":  # a downloaded change that wins: a write or a tombstone
                    _, user, item, score, deleted = op
                    later = 10**17 + 10**6 * step  # past every local write before it
                    rid = rating_id(TENANT, user, item)
                    row = RatingRow(rid, TENANT, user, item, score, None, 1, later, "z", deleted)
                    assert store.apply_remote([row]) == 1
                    if deleted:
                        model.pop((user, item), None)
                    else:
                        model[(user, item)] = score
                else:
                    _, user = op
                    erased = store.erase_user(user)
                    assert erased == sum(1 for u, _ in model if u == user)
                    model = {k: v for k, v in model.items() if k[0] != user}
            recount = store.recompute_scores()
            expected = expected_scores(model)
            for item in ("apple", "pear", "fig"):
                empty = ItemScore(item, 0, 0, (0, 0, 0, 0, 0))
                assert store.score(item) == recount.get(item, empty) == expected.get(item, empty)
            stores.close()
