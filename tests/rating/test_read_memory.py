"""Scores and pages served from memory are never stale: any change to the tenant's file
empties the memory, and a page's also goes when the node's data keys are dropped."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from edge_node.crypto.key_files import WrappingKey
from edge_node.crypto.keystore import Keyring
from edge_node.rating.model import RatingInput, decode_cursor
from edge_node.rating.read_memory import FileVersion, ReadMemory
from edge_node.rating.replication import RatingRow, rating_id
from edge_node.rating.row_documents import ROW_OVERHEAD_BYTES, RowDocuments
from edge_node.rating.store import TenantStores
from tests.cli.test_lifecycle import create_tenant
from tests.served import NotifyListener, ServedNode

TENANT = "3f8d7a4e-1b2c-4d5e-8f90-123456789abc"


class TestScoresInMemory:
    def test_a_write_on_the_same_connection_is_read_at_once(self, tmp_path: Path) -> None:
        """A score read, then a write through the same store: the next read has the write."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        assert store.score("book").count == 0
        store.upsert(RatingInput("u", "book", 4, None))
        assert (store.score("book").count, store.score("book").total) == (1, 4)

    def test_a_write_by_another_connection_is_read_at_once(self, tmp_path: Path) -> None:
        """Two stores on one file, as two workers have: a write committed by one is in the
        very next score the other reads, though the other read that score before."""
        reader = TenantStores(tmp_path, node_id="a").get(TENANT)
        writer = TenantStores(tmp_path, node_id="b").get(TENANT)
        for number in range(1, 6):
            assert reader.score("book").count == number - 1
            writer.upsert(RatingInput(f"u{number}", "book", number, None))
            assert reader.score("book").count == number
        assert reader.score("book").histogram == (1, 1, 1, 1, 1)

    def test_the_encoded_document_follows_the_score(self, tmp_path: Path) -> None:
        """The JSON document kept with a score is that score's, and is renewed with it."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        assert orjson.loads(store.score_document("book")) == store.score("book").to_json()
        store.upsert(RatingInput("u", "book", 4, None))
        assert orjson.loads(store.score_document("book"))["count"] == 1
        assert orjson.loads(store.score_document("book")) == store.score("book").to_json()


def ratings_of(document: bytes) -> list[tuple[str, int]]:
    return [(r["user_id"], r["score"]) for r in orjson.loads(document)["ratings"]]


class TestPagesInMemory:
    def test_a_write_on_the_same_connection_is_in_the_next_page(self, tmp_path: Path) -> None:
        """A page read, then a write, an update and a delete through the same store: each is
        in the very next page."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        assert ratings_of(store.page_document(item_id="book")) == []
        store.upsert(RatingInput("u", "book", 4, None))
        assert ratings_of(store.page_document(item_id="book")) == [("u", 4)]
        stored, _ = store.upsert(RatingInput("u", "book", 2, None))
        assert ratings_of(store.page_document(item_id="book")) == [("u", 2)]
        store.delete(stored.id)
        assert ratings_of(store.page_document(item_id="book")) == []

    async def test_another_connections_commit_is_in_the_next_iterations_page(
        self, tmp_path: Path
    ) -> None:
        """Two stores on one file, as two workers have: on the loop, a commit by one is in
        every page the other reads in the iterations after it."""
        reader = TenantStores(tmp_path, node_id="a").get(TENANT)
        writer = TenantStores(tmp_path, node_id="b").get(TENANT)
        for number in range(1, 6):
            assert len(ratings_of(reader.page_document())) == number - 1
            writer.upsert(RatingInput(f"u{number}", "book", number, None))
            await asyncio.sleep(0)
            assert len(ratings_of(reader.page_document())) == number

    def test_the_document_is_the_page_and_its_cursor(self, tmp_path: Path) -> None:
        """The encoded page is what `page` reads, with the cursor of its last rating when more
        follow; each query (filters, cursor, limit) has a page of its own."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        for number in range(5):
            store.upsert(RatingInput(f"u{number}", "book" if number % 2 else "film", 3, None))
        first = orjson.loads(store.page_document(limit=2))
        assert first["ratings"] == store.page(limit=2).ratings
        assert first["next_cursor"] is not None
        rest = orjson.loads(store.page_document(after=decode_cursor(first["next_cursor"])))
        assert [r["user_id"] for r in rest["ratings"]] == ["u2", "u3", "u4"]
        assert rest["next_cursor"] is None
        assert ratings_of(store.page_document(item_id="book")) == [("u1", 3), ("u3", 3)]
        assert ratings_of(store.page_document(user_id="u4")) == [("u4", 3)]

    def test_a_downloaded_row_of_the_same_time_from_another_node_is_served(
        self, tmp_path: Path
    ) -> None:
        """A row downloaded with the same updated_at as the one served, from another origin
        that wins the tie, is a new state of the row: its page shows it, not the object
        made of the state before."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        rid = rating_id(TENANT, "u", "book")

        def downloaded(score: int, origin: str) -> RatingRow:
            return RatingRow(rid, TENANT, "u", "book", score, None, 100, 100, origin, False)

        assert store.apply_remote([downloaded(2, "a")]) == 1
        assert ratings_of(store.page_document()) == [("u", 2)]
        assert store.apply_remote([downloaded(5, "b")]) == 1
        assert ratings_of(store.page_document()) == [("u", 5)]
        assert ratings_of(store.page_document(limit=7)) == [("u", 5)]

    def test_a_comment_whose_key_arrives_later_is_read_once_it_has(self, tmp_path: Path) -> None:
        """A rating synced down before its data key is listed unreadable; once the key has
        arrived by sync (in the same process, as the one-process daemon's sync worker adds
        it) the next page opens it: no page or row object keeps the unreadable answer."""
        fleet = WrappingKey(os.urandom(32))
        origin_keys = Keyring(tmp_path / "a" / "keys", fleet_key=fleet)
        keys = Keyring(tmp_path / "b" / "keys", fleet_key=fleet)
        origin = TenantStores(tmp_path / "a" / "tenants", node_id="a", keyring=origin_keys)
        here = TenantStores(tmp_path / "b" / "tenants", node_id="b", keyring=keys).get(TENANT)
        origin.get(TENANT).upsert(RatingInput("u", "book", 4, "hello"))
        here.apply_remote(origin.get(TENANT).pending_changes(100)[0])

        def comments(document: bytes) -> list[tuple[object, object]]:
            ratings = orjson.loads(document)["ratings"]
            return [(r["comment"], r.get("comment_unreadable")) for r in ratings]

        assert comments(here.page_document()) == [(None, True)]
        assert keys.add_shared(origin_keys.keys_to_upload()) == 1
        assert comments(here.page_document()) == [("hello", None)]
        assert comments(here.page_document(limit=7)) == [("hello", None)]


class TestScoresOnTheLoop:
    async def test_a_write_on_the_same_connection_is_read_within_the_iteration(
        self, tmp_path: Path
    ) -> None:
        """On the loop, a write through the store is in the very next read, with no await
        between them."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        assert store.score("book").count == 0
        store.upsert(RatingInput("u", "book", 4, None))
        assert store.score("book").count == 1

    async def test_another_connections_commit_is_read_by_the_next_iteration(
        self, tmp_path: Path
    ) -> None:
        """On the loop, a commit by another connection is in every read of the iterations
        after it, as a request that learned of that commit arrives in one of them."""
        reader = TenantStores(tmp_path, node_id="a").get(TENANT)
        writer = TenantStores(tmp_path, node_id="b").get(TENANT)
        for number in range(1, 6):
            assert reader.score("book").count == number - 1
            writer.upsert(RatingInput(f"u{number}", "book", number, None))
            await asyncio.sleep(0)
            assert reader.score("book").count == number

    def test_a_loop_stopped_mid_iteration_leaves_no_stale_read(self, tmp_path: Path) -> None:
        """Scores read on a loop that then stopped are checked again when read off the loop."""
        reader = TenantStores(tmp_path, node_id="a").get(TENANT)
        writer = TenantStores(tmp_path, node_id="b").get(TENANT)

        counts: list[int] = []

        def read_and_stop() -> None:  # the loop stops before its iteration's callbacks run
            counts.append(reader.score("book").count)
            loop.stop()

        loop = asyncio.new_event_loop()
        try:
            loop.call_soon(read_and_stop)
            loop.run_forever()
            assert counts == [0]
            writer.upsert(RatingInput("u", "book", 5, None))
            assert reader.score("book").count == 1
        finally:
            loop.close()


class TestAcrossWorkers:
    def test_every_acknowledged_write_is_in_the_next_score_on_either_worker(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With two workers, each rating acknowledged (on whichever worker took it) is counted
        by the score and listed in the page read next, on a fresh connection (whichever
        worker takes it)."""
        data_dir = tmp_path / "data"
        tenant = create_tenant(data_dir)
        node = ServedNode(data_dir, "--workers", "2", notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        notify.wait_for("READY")
        headers = {"X-API-Key": tenant["api_key"]}
        base = f"/v1/tenants/{tenant['tenant_id']}"
        for number in range(1, 21):
            rating = {"user_id": f"u{number}", "item_id": "book", "score": 5}
            assert node.request("POST", f"{base}/ratings", headers, rating)[0] == 201
            for _ in range(2):
                status, score, _ = node.request("GET", f"{base}/items/book/score", headers)
                assert (status, score["count"]) == (200, number)
                status, page, _ = node.request("GET", f"{base}/ratings?limit=100", headers)
                assert (status, len(page["ratings"])) == (200, number)
        assert node.stop() == 0


class TestMemoryBounds:
    def test_pages_kept_stay_within_their_byte_budget(self, tmp_path: Path) -> None:
        """Pages are kept up to the byte budget, the memory starting over past it, and a page
        too large to keep is still answered, read each time."""
        version = FileVersion(sqlite3.connect(tmp_path / "f.sqlite"))
        memory: ReadMemory[int, bytes] = ReadMemory(version, 100, size=len, max_bytes=1000)
        reads: list[int] = []

        def read(key: int) -> bytes:
            reads.append(key)
            return b"x" * key

        for key in (60, 70, 80):  # 210 bytes: all kept
            memory.get(key, read)
        assert [memory.get(key, read) for key in (60, 70, 80)] == [b"x" * n for n in (60, 70, 80)]
        assert reads == [60, 70, 80]
        assert memory.get(101, read) == b"x" * 101  # above a tenth of the budget
        assert memory.get(101, read) == b"x" * 101
        assert reads == [60, 70, 80, 101, 101]
        for key in range(81, 91):  # 855 bytes more: past the budget, the memory starts over
            memory.get(key, read)
        memory.get(60, read)
        assert reads[-1] == 60

    def test_row_objects_kept_stay_within_their_byte_budget(self, tmp_path: Path) -> None:
        """Rows' objects are kept, then made again once past the byte budget; pages made of
        kept objects are the same bytes as pages made afresh."""
        store = TenantStores(tmp_path, node_id="n").get(TENANT)
        for number in range(20):
            store.upsert(RatingInput(f"u{number}", "book", 3, "c" * 100))
        fresh = store.page_document(limit=20)
        rows = store._page_rows(None, None, None, 20)[0]
        made: list[object] = []

        class Counted(RowDocuments):
            def served(self, row: Sequence[Any]) -> dict[str, Any]:
                made.append(row)
                return super().served(row)

        roomy = Counted(store._sealer)
        assert roomy.page(rows, None) == (fresh, True)
        assert roomy.page(rows, None) == (fresh, True)
        assert len(made) == 20  # the second page made nothing
        made.clear()
        tight = Counted(store._sealer, max_bytes=30 * ROW_OVERHEAD_BYTES)
        assert tight.page(rows, None) == (fresh, True)
        assert tight.page(rows, None) == (fresh, True)
        assert len(made) > 20  # past the budget, objects were let go and made again

    def test_entries_past_the_bound_start_the_memory_over(self, tmp_path: Path) -> None:
        """At most `entries` answers are kept, and each is counted against the byte
        budget while it is held."""
        version = FileVersion(sqlite3.connect(tmp_path / "f.sqlite"))
        memory: ReadMemory[int, bytes] = ReadMemory(version, 3, size=len, max_bytes=10_000)
        reads: list[int] = []

        def read(key: int) -> bytes:
            reads.append(key)
            return b"x" * 10

        for key in (1, 2, 3, 4):  # the fourth starts the memory over
            memory.get(key, read)
        assert memory._bytes == 10
        memory.get(4, read)
        memory.get(1, read)
        assert reads == [1, 2, 3, 4, 1]
