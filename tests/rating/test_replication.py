"""The edge side of replication: the outbox, the conflict rule, and convergence of two replicas."""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node import sqlite as edge_sqlite
from edge_node.rating.model import ItemScore, RatingInput
from edge_node.rating.replication import RATING_ID_NAMESPACE, RatingRow, rating_id, wins
from edge_node.rating.schema import MIGRATIONS
from edge_node.rating.store import TenantStores
from edge_node.rating.tenant_store import TenantStore

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"


def all_rows(store: TenantStore) -> list[tuple]:
    return store._conn.execute(
        "SELECT id, user_id, item_id, score, comment, created_at, updated_at, origin_node,"
        " deleted FROM ratings ORDER BY id"
    ).fetchall()


def outbox_size(store: TenantStore) -> int:
    return int(store._conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def row(
    user: str, item: str, score: int, updated_at: int, origin: str, *, deleted: bool = False
) -> RatingRow:
    return RatingRow(
        rating_id(TENANT, user, item),
        TENANT,
        user,
        item,
        score,
        None,
        updated_at,
        updated_at,
        origin,
        deleted,
    )


class TestRatingIds:
    @given(st.text(), st.text(), st.text())
    def test_a_rating_id_is_the_uuid5_of_tenant_user_and_item(
        self, tenant: str, user: str, item: str
    ) -> None:
        """The id is uuid5 of the namespace and "tenant NUL user NUL item", as every replica
        (and every earlier version of the node) derives it."""
        expected = uuid.uuid5(RATING_ID_NAMESPACE, f"{tenant}\x00{user}\x00{item}")
        assert rating_id(tenant, user, item) == str(expected)


class TestOutbox:
    def test_every_local_change_is_recorded_with_it(self, tmp_path: Path) -> None:
        """Upserts, deletes and erasures leave outbox entries; pending gives the current states."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        store.upsert(RatingInput("u1", "i1", 3, "x"))
        store.upsert(RatingInput("u1", "i1", 4, "y"))
        store.upsert(RatingInput("u2", "i1", 5, None))
        store.delete(rating_id(TENANT, "u2", "i1"))
        store.upsert(RatingInput("u3", "i2", 2, None))
        store.erase_user("u3")
        assert outbox_size(store) == 6
        changes, last_seq = store.pending_changes(100)
        assert [(c.user_id, c.score, c.deleted) for c in changes] == [
            ("u1", 4, False),
            ("u2", 5, True),
            ("u3", 2, True),
        ]
        store.acknowledge_uploaded(last_seq)
        assert store.pending_changes(100) == ([], 0)

    def test_pending_changes_are_taken_in_order_and_limited(self, tmp_path: Path) -> None:
        """A limit takes the oldest entries; acknowledging them leaves the rest pending."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        for i in range(5):
            store.upsert(RatingInput(f"u{i}", "i", 1, None))
        first, seq = store.pending_changes(2)
        assert [c.user_id for c in first] == ["u0", "u1"]
        store.acknowledge_uploaded(seq)
        rest, _ = store.pending_changes(10)
        assert [c.user_id for c in rest] == ["u2", "u3", "u4"]

    def test_a_batch_larger_than_sqlites_variable_limit_is_read_whole(self, tmp_path: Path) -> None:
        """central.batch_size may exceed how many parameters this SQLite build takes in one
        statement (32766 by default): a batch of that many ratings is still read, in order."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        for i in range(30):
            store.upsert(RatingInput(f"u{i:02d}", "i", 1, None))
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 4)
        changes, seq = store.pending_changes(30)
        assert [c.user_id for c in changes] == [f"u{i:02d}" for i in range(30)]
        assert seq == 30

    def test_existing_ratings_are_queued_by_the_migration(self, tmp_path: Path) -> None:
        """A tenant file from before the outbox existed has all its ratings queued for upload."""
        path = tmp_path / f"{TENANT}.sqlite"
        conn = edge_sqlite.connect(path)
        edge_sqlite.migrate(conn, MIGRATIONS[:1])
        conn.execute(
            "INSERT INTO ratings (id, tenant_id, user_id, item_id, score, created_at, updated_at,"
            " origin_node) VALUES ('r1', ?, 'u', 'i', 2, 1, 1, 'old')",
            (TENANT,),
        )
        conn.close()
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        assert [c.id for c in store.pending_changes(10)[0]] == ["r1"]


class TestApplyRemote:
    def test_the_later_write_wins_and_ties_go_to_the_greater_node(self, tmp_path: Path) -> None:
        """A remote row replaces the local one when later, or as late from a greater node id."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        assert store.apply_remote([row("u", "i", 2, 100, "b")]) == 1
        assert store.apply_remote([row("u", "i", 5, 99, "z")]) == 0
        assert store.apply_remote([row("u", "i", 4, 100, "a")]) == 0
        assert store.apply_remote([row("u", "i", 3, 100, "c")]) == 1
        assert store.score("i") == ItemScore("i", 1, 3, (0, 0, 1, 0, 0))
        assert wins(row("u", "i", 1, 100, "c"), row("u", "i", 1, 100, "b"))

    def test_remote_tombstones_adjust_scores_and_never_enter_the_outbox(
        self, tmp_path: Path
    ) -> None:
        """A downloaded delete removes the rating from reads and scores; nothing is re-uploaded."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        store.apply_remote([row("u", "i", 2, 100, "b"), row("v", "i", 4, 100, "b")])
        store.apply_remote([row("u", "i", 2, 200, "b", deleted=True)])
        assert store.score("i") == ItemScore("i", 1, 4, (0, 0, 0, 1, 0))
        assert [r["user_id"] for r in store.page().ratings] == ["v"]
        assert outbox_size(store) == 0

    def test_checkpoint_moves_with_the_rows_it_covers(self, tmp_path: Path) -> None:
        """The download checkpoint is stored in the same transaction as the rows applied."""
        store = TenantStores(tmp_path, node_id="a").get(TENANT)
        assert store.download_checkpoint() is None
        bad = RatingRow("x", "other-tenant", "u", "i", 1, None, 1, 1, "b", False)
        with pytest.raises(ValueError, match="offered to"):
            store.set_download_checkpoint("cp-1", [row("u", "i", 2, 100, "b"), bad])
        assert store.download_checkpoint() is None
        assert store.page().ratings == []
        assert store.set_download_checkpoint("cp-2", [row("u", "i", 2, 100, "b")]) == 1
        assert store.download_checkpoint() == "cp-2"


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["upsert", "delete", "erase"]),
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["i1", "i2"]),
        st.integers(1, 5),
    ),
    max_size=40,
)


def exchange(source: TenantStore, target: TenantStore) -> None:
    changes, seq = source.pending_changes(10_000)
    target.apply_remote(changes)
    source.acknowledge_uploaded(seq)


class TestConvergence:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(OPS, st.booleans())
    def test_two_replicas_converge_whatever_they_did(self, ops: list[tuple], a_first: bool) -> None:
        """After exchanging their changes both ways, two replicas hold identical rows and scores."""
        with tempfile.TemporaryDirectory() as directory:
            a = TenantStores(Path(directory) / "a", node_id="a").get(TENANT)
            b = TenantStores(Path(directory) / "b", node_id="b").get(TENANT)
            for node, op, user, item, score in ops:
                store = a if node == "a" else b
                if op == "upsert":
                    store.upsert(RatingInput(user, item, score, f"{node}{score}"))
                elif op == "delete":
                    store.delete(rating_id(TENANT, user, item))
                else:
                    store.erase_user(user)
            first, second = (a, b) if a_first else (b, a)
            exchange(first, second)
            exchange(second, first)
            assert all_rows(a) == all_rows(b)
            for item in ("i1", "i2"):
                assert (
                    a.score(item)
                    == b.score(item)
                    == a.recompute_scores().get(item, ItemScore(item, 0, 0, (0, 0, 0, 0, 0)))
                )
