"""A tenant file's rating writes: what an upsert stores, answers and records for upload."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edge_node import sqlite
from edge_node.rating import tenant_store
from edge_node.rating.model import RatingInput
from edge_node.rating.replication import RatingRow, rating_id
from edge_node.rating.schema import MIGRATIONS
from edge_node.rating.store import TenantStores
from edge_node.rating.tenant_store import TenantStore

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"


def open_store(tmp_path: Path) -> TenantStore:
    return TenantStores(tmp_path, node_id="edge-a").get(TENANT)


def outboxed(store: TenantStore) -> list[str]:
    return [rid for (rid,) in store._conn.execute("SELECT rating_id FROM outbox ORDER BY seq")]


def made_centrally(user: str, item: str, *, deleted: bool = False) -> RatingRow:
    """A rating an operator inserted on the central database, with an id of its own."""
    return RatingRow(str(uuid.uuid4()), TENANT, user, item, 2, None, 100, 100, "admin", deleted)


class TestUpsert:
    def test_an_update_keeps_created_at_and_moves_updated_at_on(self, tmp_path: Path) -> None:
        """Re-rating keeps the id and created_at, answers not-created, and records the id."""
        store = open_store(tmp_path)
        first, created = store.upsert(RatingInput("ana", "book", 4, "solid"))
        assert created
        second, created = store.upsert(RatingInput("ana", "book", 4, "still solid"))
        assert not created
        assert (second.id, second.created_at) == (first.id, first.created_at)
        assert second.updated_at > first.updated_at
        assert store.page().ratings == [second.to_json()]
        assert outboxed(store) == [first.id, first.id]

    def test_updated_at_moves_forward_when_the_clock_reads_earlier(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A clock reading behind the row's updated_at (stepped back before a restart, or a row
        written by a node whose clock is ahead) still moves updated_at past the stored one."""
        store = open_store(tmp_path)
        monkeypatch.setattr(tenant_store, "now_us", lambda: 5_000_000)
        first, _ = store.upsert(RatingInput("ana", "book", 4, None))
        monkeypatch.setattr(tenant_store, "now_us", lambda: 1_000_000)
        second, _ = store.upsert(RatingInput("ana", "book", 3, None))
        third, _ = store.upsert(RatingInput("ana", "book", 3, "again"))
        assert (first.updated_at, second.updated_at, third.updated_at) == (
            5_000_000,
            5_000_001,
            5_000_002,
        )
        assert third.created_at == 5_000_000
        assert store.pending_changes(10)[0][0].updated_at == 5_000_002

    def test_a_revived_tombstone_is_created_again_at_its_revival(self, tmp_path: Path) -> None:
        """Rating again after a delete answers created, with created_at = updated_at, later
        than the tombstone's; the rating is listed and counted again."""
        store = open_store(tmp_path)
        first, _ = store.upsert(RatingInput("ana", "book", 5, None))
        store.delete(first.id)
        again, created = store.upsert(RatingInput("ana", "book", 2, "back"))
        assert created
        assert again.id == first.id
        assert again.created_at == again.updated_at > first.updated_at
        assert store.page().ratings == [again.to_json()]
        assert store.score("book").histogram == (0, 1, 0, 0, 0)

    @pytest.mark.parametrize("deleted", [False, True], ids=["live", "tombstone"])
    def test_a_rating_with_an_id_of_its_own_keeps_it(self, tmp_path: Path, deleted: bool) -> None:
        """A downloaded rating whose id is not derived from (tenant, user, item) is rated again
        in place: one row, its id answered and outboxed, its comment sealed for that id."""
        store = open_store(tmp_path)
        remote = made_centrally("ana", "book", deleted=deleted)
        store.apply_remote([remote])
        rating, created = store.upsert(RatingInput("ana", "book", 4, "mine"))
        assert (rating.id, created) == (remote.id, deleted)
        assert rating.id != rating_id(TENANT, "ana", "book")
        assert store.page().ratings == [rating.to_json()]  # the comment opens under its id
        assert store._conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 1
        assert outboxed(store) == [remote.id]


class TestScoreTriggers:
    def test_a_new_comment_on_the_same_score_leaves_the_aggregates_alone(
        self, tmp_path: Path
    ) -> None:
        """Replacing a live rating's comment changes its row and outbox only; a new score
        changes its item's aggregates once, not by a removal and an addition."""
        store = open_store(tmp_path)
        store.upsert(RatingInput("ana", "book", 4, "first"))
        changes = store._conn.total_changes
        store.upsert(RatingInput("ana", "book", 4, "second"))
        assert store._conn.total_changes - changes == 2  # the row, the outbox entry
        changes = store._conn.total_changes
        store.upsert(RatingInput("ana", "book", 1, "third"))
        assert store._conn.total_changes - changes == 3  # and the item's aggregates
        assert store.score("book").histogram == (1, 0, 0, 0, 0)
        assert store.recompute_scores()["book"] == store.score("book")

    def test_a_rating_moved_to_another_item_moves_between_their_aggregates(
        self, tmp_path: Path
    ) -> None:
        """An update of item_id (no API does it; the triggers keep scores whoever writes) takes
        the rating out of one item's aggregates and into the other's, score changed or not."""
        store = open_store(tmp_path)
        store.upsert(RatingInput("ana", "book", 4, None))
        store.upsert(RatingInput("bo", "film", 2, None))
        store._conn.execute("UPDATE ratings SET item_id = 'film', score = 5 WHERE user_id = 'ana'")
        store._conn.execute("UPDATE ratings SET item_id = 'book' WHERE user_id = 'bo'")
        assert store.score("film").histogram == (0, 0, 0, 0, 1)
        assert store.score("book").histogram == (0, 1, 0, 0, 0)
        assert store.recompute_scores() == {
            "book": store.score("book"),
            "film": store.score("film"),
        }

    def test_a_file_scored_by_the_former_triggers_stays_exact(self, tmp_path: Path) -> None:
        """Aggregates kept by the triggers of migration 3 carry over: after the upgrade, updates,
        a tombstone and a revival leave every score equal to a recount of the rows."""
        conn = sqlite.connect(tmp_path / f"{TENANT}.sqlite")
        sqlite.migrate(conn, MIGRATIONS[:3])
        for number, (user, item) in enumerate([("ana", "book"), ("bo", "book"), ("cy", "film")]):
            conn.execute(
                "INSERT INTO ratings (id, tenant_id, user_id, item_id, score, created_at,"
                " updated_at, origin_node) VALUES (?, ?, ?, ?, ?, 1, 1, 'old')",
                (rating_id(TENANT, user, item), TENANT, user, item, number + 1),
            )
        conn.execute("UPDATE ratings SET score = 5, updated_at = 2 WHERE user_id = 'ana'")
        conn.close()
        store = open_store(tmp_path)
        assert store.recompute_scores() == {
            "book": store.score("book"),
            "film": store.score("film"),
        }
        store.upsert(RatingInput("ana", "book", 1, None))
        store.upsert(RatingInput("bo", "book", 2, "same score"))
        store.delete(rating_id(TENANT, "cy", "film"))
        store.upsert(RatingInput("cy", "film", 4, None))
        assert store.score("book").histogram == (1, 1, 0, 0, 0)
        assert store.score("film").histogram == (0, 0, 0, 1, 0)
        assert store.recompute_scores() == {
            "book": store.score("book"),
            "film": store.score("film"),
        }
