"""The rating API over real HTTP: upsert, list and page, score, delete, erase, service routes."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
from yarl import URL

from edge_node.http.app import create_app
from edge_node.http.docs_page import PATHS as DOCS_PAGE_PATHS
from edge_node.http.openapi import openapi_document
from edge_node.ids import is_uuid
from sync.billing.usage_view import LocalUsage
from tests.support import RunningNode, Tenant

RATING_KEYS = {
    "id",
    "tenant_id",
    "user_id",
    "item_id",
    "score",
    "comment",
    "created_at",
    "updated_at",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EMPTY_HISTOGRAM = {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}


def conforms(schema_name: str, document: Any) -> None:
    """Assert `document` matches the named schema of the published OpenAPI document."""
    schema = {
        "$ref": f"#/components/schemas/{schema_name}",
        "components": openapi_document()["components"],
    }
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    errors = [error.message for error in validator.iter_errors(document)]
    assert not errors, f"{schema_name} breached: {errors} in {document}"


def moment(timestamp: str) -> datetime:
    assert TIMESTAMP.match(timestamp), timestamp
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def position(rating: dict[str, Any]) -> tuple[str, str]:
    """Where a rating sits in list order; fixed-width timestamps sort as text."""
    return rating["created_at"], rating["id"]


@dataclass
class TenantClient:
    """One tenant's admin view of the API, checking every answer against the published schema."""

    node: RunningNode
    tenant: Tenant

    def url(self, path: str) -> str:
        return self.node.tenant_url(self.tenant.tenant_id, path)

    async def post(self, **body: Any) -> tuple[int, dict[str, Any]]:
        async with self.node.session.post(
            self.url("/ratings"), headers=self.tenant.headers, json=body
        ) as response:
            document = await response.json()
            assert response.status in (200, 201), document
            conforms("Rating", document)
            return response.status, document

    async def page(self, **params: Any) -> dict[str, Any]:
        query = {name: str(value) for name, value in params.items()}
        async with self.node.session.get(
            self.url("/ratings"), headers=self.tenant.headers, params=query
        ) as response:
            document = await response.json()
            assert response.status == 200, document
            conforms("RatingPage", document)
            return document

    async def everything(self) -> list[dict[str, Any]]:
        page = await self.page(limit=500)
        assert page["next_cursor"] is None
        return page["ratings"]

    async def score(self, item_id: str) -> dict[str, Any]:
        url = URL(self.url(f"/items/{quote(item_id, safe='')}/score"), encoded=True)
        async with self.node.session.get(url, headers=self.tenant.headers) as response:
            document = await response.json()
            assert response.status == 200, document
            conforms("ItemScore", document)
            return document

    async def delete(self, rating_id: str) -> tuple[int, bytes]:
        async with self.node.session.delete(
            self.url(f"/ratings/{rating_id}"), headers=self.tenant.headers
        ) as response:
            return response.status, await response.read()

    async def erase(self, user_id: str) -> dict[str, Any]:
        url = URL(self.url(f"/users/{quote(user_id, safe='')}"), encoded=True)
        async with self.node.session.delete(url, headers=self.tenant.headers) as response:
            document = await response.json()
            assert response.status == 200, document
            conforms("UserErasure", document)
            return document

    def stored_rows(self, user_id: str) -> list[tuple[Any, ...]]:
        """The user's rows as the tenant's SQLite file holds them, tombstones included."""
        path = self.node.storage.stores.path(self.tenant.tenant_id)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT item_id, score, comment, deleted FROM ratings WHERE user_id = ?"
                " ORDER BY item_id",
                (user_id,),
            ).fetchall()


@pytest.fixture
def client(node: RunningNode) -> TenantClient:
    return TenantClient(node, node.create_tenant("ratings", rate_limit=100_000))


async def walk(
    client: TenantClient,
    limit: int,
    between_pages: Callable[[int], Awaitable[None]] | None = None,
    **filters: str,
) -> list[dict[str, Any]]:
    """Every rating reachable by following next_cursor from the first page."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for page_number in range(1000):
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.page(**params)
        seen += page["ratings"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert len(page["ratings"]) == limit, "a page short of the limit must be the last"
        if between_pages is not None:
            await between_pages(page_number)
    raise AssertionError("pagination did not end")


class TestUpsert:
    async def test_first_post_creates_a_rating(self, client: TenantClient) -> None:
        """The first POST of a (user, item) answers 201 with the whole stored rating."""
        before = datetime.now(UTC)
        status, rating = await client.post(user_id="ana", item_id="book", score=4, comment="solid")
        assert status == 201
        assert set(rating) == RATING_KEYS
        assert is_uuid(rating["id"])
        assert rating["tenant_id"] == client.tenant.tenant_id
        assert (rating["user_id"], rating["item_id"], rating["score"], rating["comment"]) == (
            "ana",
            "book",
            4,
            "solid",
        )
        assert rating["created_at"] == rating["updated_at"]
        assert before - timedelta(seconds=5) <= moment(rating["created_at"]) <= datetime.now(UTC)

    async def test_comment_is_optional(self, client: TenantClient) -> None:
        """A rating without a comment is stored with comment null."""
        _, rating = await client.post(user_id="ana", item_id="book", score=2)
        assert rating["comment"] is None
        assert (await client.everything())[0]["comment"] is None

    async def test_second_post_updates_the_same_rating(self, client: TenantClient) -> None:
        """Re-rating an item answers 200, keeps id and created_at, and moves updated_at forward."""
        _, first = await client.post(user_id="ana", item_id="book", score=4, comment="solid")
        status, second = await client.post(user_id="ana", item_id="book", score=1, comment="meh")
        assert status == 200
        assert second["id"] == first["id"]
        assert second["created_at"] == first["created_at"]
        assert moment(second["updated_at"]) > moment(first["updated_at"])
        assert (second["score"], second["comment"]) == (1, "meh")
        assert await client.everything() == [second]

    async def test_update_replaces_the_comment(self, client: TenantClient) -> None:
        """An update without a comment clears the one stored before: the POST replaces it all."""
        await client.post(user_id="ana", item_id="book", score=4, comment="solid")
        _, updated = await client.post(user_id="ana", item_id="book", score=4)
        assert updated["comment"] is None
        assert (await client.everything())[0]["comment"] is None

    async def test_each_user_item_pair_is_its_own_rating(self, client: TenantClient) -> None:
        """Different users on one item, or one user on different items, make separate ratings."""
        ratings = [
            (await client.post(user_id=user, item_id=item, score=3))[1]
            for user, item in (("ana", "book"), ("bo", "book"), ("ana", "film"))
        ]
        assert len({rating["id"] for rating in ratings}) == 3
        assert await client.everything() == ratings


class TestListing:
    async def seed(self, client: TenantClient) -> list[dict[str, Any]]:
        ratings = []
        for user in ("ana", "bo", "cy"):
            for item in ("book", "film"):
                ratings.append((await client.post(user_id=user, item_id=item, score=3))[1])
        return ratings

    async def test_lists_in_creation_order(self, client: TenantClient) -> None:
        """Without filters every live rating is listed, oldest first, with no next page."""
        ratings = await self.seed(client)
        page = await client.page()
        assert page == {"ratings": ratings, "next_cursor": None}
        assert [position(r) for r in ratings] == sorted(position(r) for r in ratings)

    async def test_item_filter(self, client: TenantClient) -> None:
        """item_id keeps only that item's ratings."""
        ratings = await self.seed(client)
        page = await client.page(item_id="film")
        assert page["ratings"] == [r for r in ratings if r["item_id"] == "film"]

    async def test_user_filter(self, client: TenantClient) -> None:
        """user_id keeps only that user's ratings."""
        ratings = await self.seed(client)
        page = await client.page(user_id="bo")
        assert page["ratings"] == [r for r in ratings if r["user_id"] == "bo"]

    async def test_filters_combine(self, client: TenantClient) -> None:
        """item_id and user_id together keep the one rating matching both, or none."""
        ratings = await self.seed(client)
        both = await client.page(user_id="cy", item_id="book")
        assert both["ratings"] == [
            r for r in ratings if (r["user_id"], r["item_id"]) == ("cy", "book")
        ]
        assert (await client.page(user_id="cy", item_id="nobody-rated-this"))["ratings"] == []

    async def test_limit_caps_a_page(self, client: TenantClient) -> None:
        """limit bounds the page and a next_cursor leads on while more remain."""
        ratings = await self.seed(client)
        first = await client.page(limit=4)
        assert first["ratings"] == ratings[:4]
        assert first["next_cursor"] is not None
        last = await client.page(limit=4, cursor=first["next_cursor"])
        assert last == {"ratings": ratings[4:], "next_cursor": None}

    async def test_exactly_full_last_page_has_no_cursor(self, client: TenantClient) -> None:
        """When the rest exactly fills a page, next_cursor is null rather than an empty page."""
        ratings = await self.seed(client)
        first = await client.page(limit=3)
        last = await client.page(limit=3, cursor=first["next_cursor"])
        assert last == {"ratings": ratings[3:], "next_cursor": None}

    async def test_default_page_is_fifty(self, client: TenantClient) -> None:
        """Without limit a page holds 50 ratings."""
        for n in range(51):
            await client.post(user_id=f"user-{n}", item_id="book", score=5)
        page = await client.page()
        assert len(page["ratings"]) == 50
        assert page["next_cursor"] is not None

    async def test_walking_all_pages_sees_each_rating_once(self, client: TenantClient) -> None:
        """Following cursors yields every rating exactly once, in (created_at, id) order."""
        for n in range(23):
            await client.post(user_id=f"user-{n}", item_id=f"item-{n % 4}", score=n % 5 + 1)
        everything = await client.everything()
        walked = await walk(client, 5)
        assert walked == everything
        assert [position(r) for r in walked] == sorted(position(r) for r in walked)

    async def test_walking_a_filtered_list(self, client: TenantClient) -> None:
        """A cursor continues within the filter it was issued under."""
        for n in range(14):
            await client.post(user_id=f"user-{n}", item_id=f"item-{n % 2}", score=3)
        walked = await walk(client, 3, item_id="item-1")
        assert walked == [r for r in await client.everything() if r["item_id"] == "item-1"]
        assert len(walked) == 7

    async def test_writes_between_pages_cause_no_duplicates_or_gaps(
        self, client: TenantClient
    ) -> None:
        """New ratings and updates made mid-walk neither repeat nor skip any rating."""
        for n in range(12):
            await client.post(user_id=f"user-{n:02d}", item_id="book", score=3)
        original = await client.everything()
        added: list[dict[str, Any]] = []

        async def write(page_number: int) -> None:
            # Update one rating already seen and one not yet reached, and add two new ones.
            await client.post(user_id="user-00", item_id="book", score=1)
            await client.post(user_id="user-11", item_id="book", score=5)
            for n in range(2):
                _, rating = await client.post(
                    user_id=f"late-{page_number}-{n}", item_id="book", score=2
                )
                added.append(rating)

        walked = await walk(client, 5, between_pages=write)
        ids = [r["id"] for r in walked]
        assert len(ids) == len(set(ids)), "a rating was listed twice"
        assert ids == [r["id"] for r in original] + [r["id"] for r in added]
        assert [position(r) for r in walked] == sorted(position(r) for r in walked)
        assert walked[-len(added) - 1]["score"] == 5, "an update reached later shows its new value"

    async def test_cursor_survives_deletion_of_its_rating(self, client: TenantClient) -> None:
        """Deleting the rating a cursor points at does not break or restart the walk."""
        ratings = [
            (await client.post(user_id=f"user-{n}", item_id="book", score=3))[1] for n in range(6)
        ]
        first = await client.page(limit=3)
        status, _ = await client.delete(ratings[2]["id"])
        assert status == 204
        rest = await client.page(limit=3, cursor=first["next_cursor"])
        assert rest == {"ratings": ratings[3:], "next_cursor": None}


class TestScore:
    async def test_unrated_item(self, client: TenantClient) -> None:
        """An item nobody rated scores count 0, average null and an all-zero histogram."""
        assert await client.score("never-rated") == {
            "item_id": "never-rated",
            "count": 0,
            "average": None,
            "histogram": EMPTY_HISTOGRAM,
        }

    async def test_counts_average_and_histogram(self, client: TenantClient) -> None:
        """The score counts the item's ratings, averages them and bins them by score."""
        for user, score in (("ana", 5), ("bo", 4), ("cy", 4), ("dee", 1)):
            await client.post(user_id=user, item_id="book", score=score)
        await client.post(user_id="ana", item_id="film", score=2)
        assert await client.score("book") == {
            "item_id": "book",
            "count": 4,
            "average": 3.5,
            "histogram": {"1": 1, "2": 0, "3": 0, "4": 2, "5": 1},
        }

    async def test_average_is_rounded_to_six_places(self, client: TenantClient) -> None:
        """A repeating average is given to six decimal places."""
        for user, score in (("ana", 1), ("bo", 2), ("cy", 2)):
            await client.post(user_id=user, item_id="book", score=score)
        assert (await client.score("book"))["average"] == 1.666667

    async def test_update_moves_the_rating_between_bins(self, client: TenantClient) -> None:
        """Re-rating changes the histogram and average without counting the user twice."""
        await client.post(user_id="ana", item_id="book", score=5)
        await client.post(user_id="bo", item_id="book", score=3)
        await client.post(user_id="ana", item_id="book", score=1)
        score = await client.score("book")
        assert (score["count"], score["average"]) == (2, 2.0)
        assert score["histogram"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5": 0}

    async def test_delete_and_erasure_leave_the_score(self, client: TenantClient) -> None:
        """Deleted and erased ratings stop counting; with none left the item reads as unrated."""
        _, ana = await client.post(user_id="ana", item_id="book", score=5)
        await client.post(user_id="bo", item_id="book", score=2)
        await client.post(user_id="bo", item_id="film", score=4)
        assert (await client.delete(ana["id"]))[0] == 204
        assert await client.score("book") == {
            "item_id": "book",
            "count": 1,
            "average": 2.0,
            "histogram": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 0},
        }
        await client.erase("bo")
        for item in ("book", "film"):
            assert await client.score(item) == {
                "item_id": item,
                "count": 0,
                "average": None,
                "histogram": EMPTY_HISTOGRAM,
            }


class TestDeleteRating:
    async def test_delete_then_delete_again(self, client: TenantClient) -> None:
        """Deleting answers 204 with no body; the same delete again is a 404 problem."""
        _, rating = await client.post(user_id="ana", item_id="book", score=5)
        assert await client.delete(rating["id"]) == (204, b"")
        status, body = await client.delete(rating["id"])
        assert status == 404
        assert b"urn:edge-node:problem:rating-not-found" in body

    async def test_unknown_rating_is_not_found(self, client: TenantClient) -> None:
        """A well-formed id that names no rating is a 404."""
        status, _ = await client.delete("00000000-0000-4000-8000-000000000000")
        assert status == 404

    async def test_deleted_rating_leaves_list_and_score(self, client: TenantClient) -> None:
        """A deleted rating is in no listing, filtered or not, and not in its item's score."""
        _, gone = await client.post(user_id="ana", item_id="book", score=5, comment="bye")
        _, kept = await client.post(user_id="bo", item_id="book", score=3)
        await client.delete(gone["id"])
        assert await client.everything() == [kept]
        assert (await client.page(user_id="ana"))["ratings"] == []
        assert (await client.score("book"))["count"] == 1
        assert client.stored_rows("ana") == [("book", 5, None, 1)], "the comment is erased"

    async def test_posting_again_after_delete_creates(self, client: TenantClient) -> None:
        """After a delete the same (user, item) POST is a 201 again, with the same id."""
        _, first = await client.post(user_id="ana", item_id="book", score=5)
        await client.delete(first["id"])
        status, again = await client.post(user_id="ana", item_id="book", score=2)
        assert status == 201
        assert again["id"] == first["id"]
        assert moment(again["created_at"]) > moment(first["created_at"])
        assert again["created_at"] == again["updated_at"]
        assert await client.everything() == [again]
        assert (await client.score("book"))["histogram"]["2"] == 1


class TestEraseUser:
    async def test_erases_every_rating_of_the_user(self, client: TenantClient) -> None:
        """Erasing a user deletes all their ratings, says how many, and spares everyone else."""
        for item in ("book", "film", "game"):
            await client.post(user_id="ana", item_id=item, score=4, comment=f"ana on {item}")
        _, other = await client.post(user_id="bo", item_id="book", score=1, comment="bo's")
        assert await client.erase("ana") == {"user_id": "ana", "deleted": 3}
        assert await client.everything() == [other]
        assert (await client.score("book"))["count"] == 1

    async def test_erased_comments_are_gone_from_storage(self, client: TenantClient) -> None:
        """After erasure the user's rows in the tenant file hold no comment."""
        for item in ("book", "film"):
            await client.post(user_id="ana", item_id=item, score=4, comment="private words")
        await client.erase("ana")
        assert client.stored_rows("ana") == [("book", 4, None, 1), ("film", 4, None, 1)]

    async def test_erasing_again_finds_nothing(self, client: TenantClient) -> None:
        """A second erasure, or one of an unknown user, deletes 0 ratings."""
        await client.post(user_id="ana", item_id="book", score=4)
        await client.erase("ana")
        assert await client.erase("ana") == {"user_id": "ana", "deleted": 0}
        assert await client.erase("nobody") == {"user_id": "nobody", "deleted": 0}

    async def test_user_can_rate_again_after_erasure(self, client: TenantClient) -> None:
        """An erased user's next POST creates a fresh rating (201)."""
        await client.post(user_id="ana", item_id="book", score=4, comment="old")
        await client.erase("ana")
        status, rating = await client.post(user_id="ana", item_id="book", score=2)
        assert status == 201
        assert rating["comment"] is None
        assert (await client.score("book"))["count"] == 1


class TestServiceRoutes:
    async def test_healthz(self, node: RunningNode) -> None:
        """/healthz answers 200 without credentials."""
        async with node.session.get(f"{node.url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}

    async def test_readyz(self, node: RunningNode) -> None:
        """/readyz answers 200 when node.sqlite and the tenant directory are writable."""
        async with node.session.get(f"{node.url}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready"}

    async def test_openapi_is_3_1_and_lists_every_route(self, node: RunningNode) -> None:
        """/v1/openapi.json is OpenAPI 3.1 and documents exactly the routes the app serves,
        but for the docs page's (a page about the API, not part of it)."""
        async with node.session.get(f"{node.url}/v1/openapi.json") as response:
            assert response.status == 200
            document = await response.json()
        assert document["openapi"].startswith("3.1.")
        usage = LocalUsage(node.config.data_path)  # the daemon serves the usage API
        served = {
            (route.method, route.resource.canonical)
            for route in create_app(
                node.config, node.storage, node.meter, usage=usage
            ).router.routes()
            if route.resource is not None and route.resource.canonical not in DOCS_PAGE_PATHS
        }
        published = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
        assert served == published

    async def test_openapi_declares_every_path_parameter(self, node: RunningNode) -> None:
        """Each templated path segment is a declared, required path parameter."""
        async with node.session.get(f"{node.url}/v1/openapi.json") as response:
            document = await response.json()
        for path, operations in document["paths"].items():
            in_path = set(re.findall(r"{(\w+)}", path))
            for method, operation in operations.items():
                declared = {
                    p["name"]
                    for p in operation.get("parameters", [])
                    if p["in"] == "path" and p["required"]
                }
                assert declared == in_path, f"{method.upper()} {path}"
