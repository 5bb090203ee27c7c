"""Bad input gets a stable problem+json answer, never a 500, and never changes what is stored."""

from __future__ import annotations

import base64
import gzip
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from yarl import URL

from tests.support import RunningNode, Tenant

PROBLEM = "urn:edge-node:problem:"
MISSING = object()
VALID = {"user_id": "mallory", "item_id": "widget", "score": 3}


def rating(**changes: Any) -> bytes:
    """A valid rating body with some fields changed, or removed when given MISSING."""
    body = {**VALID, **changes}
    return orjson.dumps({name: value for name, value in body.items() if value is not MISSING})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Bad:
    """One bad request: where it goes (with {placeholders}), what it carries, what it gets."""

    method: str
    path: str
    status: int
    problem: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    query: str = ""
    fields: frozenset[str] = frozenset()
    allow: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


TENANT = "/v1/tenants/{tid}"
RATINGS = TENANT + "/ratings"


def body_case(body: bytes, *fields: str, problem: str = "invalid-body") -> Bad:
    return Bad("POST", RATINGS, 400, problem, body=body, fields=frozenset(fields))


def query_case(query: str, *fields: str, problem: str = "invalid-parameter") -> Bad:
    return Bad("GET", RATINGS, 400, problem, query=query, fields=frozenset(fields))


BAD_IDS = {
    "empty": "",
    "129-chars": "x" * 129,
    "nul": "a\u0000b",
    "newline": "a\nb",
    "tab": "\t",
    "delete-char": "a\x7f",
    "c1-control": "a\u0085b",
}
BAD_ID_VALUES = {"number": 5, "null": None, "true": True, "list": ["a"], "object": {"a": "b"}}

CURSORS = {
    "garbage": quote("not a cursor!", safe=""),
    "short": "abc",
    "empty": "",
    "base64-of-text": b64(b"hello world"),
    "base64-of-object": b64(b'{"created_at": 1}'),
    "base64-of-pair": b64(b"[1, 2]"),
    "truncated": "{cursor_cut}",
    "other-version": "{cursor_v2}",
    "time-as-string": "{cursor_time_string}",
    "time-as-float": "{cursor_time_float}",
    "time-past-int64": "{cursor_time_huge}",
    "id-not-uuid": "{cursor_id_bad}",
    "id-upper-case": "{cursor_id_upper}",
    "id-with-newline": "{cursor_id_newline}",
    "stray-characters": "{cursor}" + quote("!!", safe=""),
    "extra-element": "{cursor_extra}",
}
LIMITS = {
    "0": "0",
    "501": "501",
    "-1": "-1",
    "abc": "abc",
    "empty": "",
    "1.5": "1.5",
    "1e2": "1e2",
    "plus": "%2B5",
    "space": "%205",
    "superscript-two": "%C2%B2",
    "fullwidth-five": "%EF%BC%95",
}

FAMILIES: dict[str, dict[str, Bad]] = {
    "score-not-1-to-5": {
        name: body_case(rating(score=value), "score")
        for name, value in {
            "0": 0,
            "6": 6,
            "-1": -1,
            "3.5": 3.5,
            "string": "3",
            "true": True,
            "null": None,
            "list": [3],
            "2**62": 2**62,
        }.items()
    }
    | {"past-64-bits": body_case(rating(score=12345).replace(b"12345", b"9" * 30), "score")},
    "missing-or-unknown-fields": {
        **{
            f"missing-{name}": body_case(rating(**{name: MISSING}), name)
            for name in ("user_id", "item_id", "score")
        },
        "empty-object": body_case(b"{}", "user_id", "item_id", "score"),
        "unknown-field": body_case(rating(rating=5), "rating"),
        "field-name-case": body_case(rating(Score=4), "Score"),
        "all-wrong-at-once": body_case(
            rating(user_id="", item_id=7, score=9, comment=1, extra=0),
            "user_id",
            "item_id",
            "score",
            "comment",
            "extra",
        ),
    },
    "bad-ids-in-body": {
        f"{name}-{kind}": body_case(rating(**{name: value}), name)
        for name in ("user_id", "item_id")
        for kind, value in {**BAD_IDS, **BAD_ID_VALUES}.items()
    },
    "bad-comments": {
        "2001-chars": body_case(rating(comment="c" * 2001), "comment"),
        **{
            kind: body_case(rating(comment=value), "comment")
            for kind, value in {
                "number": 5,
                "true": True,
                "list": ["x"],
                "object": {"x": 1},
            }.items()
        },
    },
    "body-not-an-object": {
        kind: body_case(body)
        for kind, body in {
            "list": b"[]",
            "list-of-rating": b"[" + rating() + b"]",
            "string": b'"a rating"',
            "number": b"3",
            "null": b"null",
            "true": b"true",
        }.items()
    },
    "malformed-json": {
        kind: body_case(body, problem="malformed-json")
        for kind, body in {
            "truncated": rating()[:-5],
            "single-quotes": b"{'user_id': 'a', 'item_id': 'b', 'score': 3}",
            "empty": b"",
            "two-documents": rating() + rating(),
            "nan": b'{"user_id": "a", "item_id": "b", "score": NaN}',
            "trailing-comma": b'{"user_id": "a", "item_id": "b", "score": 3,}',
            "lone-surrogate": b'{"user_id": "\\ud800", "item_id": "b", "score": 3}',
            "too-deep": b"[" * 2000 + b"]" * 2000,
        }.items()
    },
    "not-utf-8": {
        **{
            kind: body_case(body, problem="invalid-encoding")
            for kind, body in {
                "ff-byte": b'{"user_id": "\xff", "item_id": "b", "score": 3}',
                "overlong": b'{"user_id": "\xc0\xaf", "item_id": "b", "score": 3}',
                "encoded-surrogate": b'{"user_id": "\xed\xa0\x80", "item_id": "b", "score": 3}',
                "truncated-sequence": b'{"user_id": "\xe2\x82", "item_id": "b", "score": 3}',
                "latin-1-text": '{"user_id": "müller", "item_id": "b", "score": 3}'.encode(
                    "latin-1"
                ),
            }.items()
        },
        "gzip-that-is-not": Bad(
            "POST",
            RATINGS,
            400,
            "invalid-encoding",
            body=b"this is not gzip",
            headers=(("Content-Encoding", "gzip"),),
        ),
    },
    "too-large": {
        "16-KiB-and-more": Bad(
            "POST", RATINGS, 413, "payload-too-large", body=rating(comment=" " * 16_400)
        ),
        "gzip-bomb": Bad(
            "POST",
            RATINGS,
            413,
            "payload-too-large",
            body=gzip.compress(rating(comment="a" * 1_000_000)),
            headers=(("Content-Encoding", "gzip"),),
        ),
    },
    "not-json-utf-8": {
        kind: Bad("POST", RATINGS, 415, "unsupported-media-type", body=rating(), content_type=ct)
        for kind, ct in {
            "text": "text/plain",
            "form": "application/x-www-form-urlencoded",
            "multipart": "multipart/form-data; boundary=x",
            "missing": None,
            "merge-patch": "application/merge-patch+json",
            "latin-1": "application/json; charset=latin-1",
            "json-prefix": "application/jsonx",
            "utf-16": "application/json; charset=utf-16",
        }.items()
    },
    "bad-tenant-in-path": {
        kind: Bad("GET", f"/v1/tenants/{tenant}/ratings", 400, "invalid-parameter")
        for kind, tenant in {
            "not-uuid": "acme",
            "upper-case": "{TID}",
            "no-hyphens": "{tid_hex}",
            "trailing-newline": "{tid}%0A",
        }.items()
    },
    "bad-rating-id": {
        kind: Bad(
            "DELETE",
            f"{TENANT}/ratings/{rid}",
            400,
            "invalid-parameter",
            fields=frozenset({"rating_id"}),
        )
        for kind, rid in {
            "not-uuid": "abc",
            "upper-case": "{RID}",
            "trailing-newline": "{rid}%0A",
            "too-long": "{rid}0",
        }.items()
    },
    "bad-cursor": {
        kind: query_case(f"cursor={cursor}", "cursor", problem="invalid-cursor")
        for kind, cursor in CURSORS.items()
    },
    "bad-limit": {kind: query_case(f"limit={value}", "limit") for kind, value in LIMITS.items()},
    "unknown-or-repeated-parameters": {
        "unknown": query_case("sort=score", "sort"),
        "name-case": query_case("Limit=5", "Limit"),
        "repeated-limit": query_case("limit=1&limit=2", "limit"),
        "repeated-item-filter": query_case("item_id=a&item_id=b", "item_id"),
        "repeated-cursor": query_case("cursor={cursor}&cursor={cursor}", "cursor"),
    },
    "bad-ids-in-filters": {
        f"{name}-{kind}": query_case(f"{name}={quote(value, safe='')}", name)
        for name in ("item_id", "user_id")
        for kind, value in BAD_IDS.items()
    },
    "bad-ids-in-paths": {
        **{
            f"score-{kind}": Bad(
                "GET",
                f"{TENANT}/items/{quote(value, safe='')}/score",
                400,
                "invalid-parameter",
                fields=frozenset({"item_id"}),
            )
            for kind, value in BAD_IDS.items()
            if value
        },
        **{
            f"erase-{kind}": Bad(
                "DELETE",
                f"{TENANT}/users/{quote(value, safe='')}",
                400,
                "invalid-parameter",
                fields=frozenset({"user_id"}),
            )
            for kind, value in BAD_IDS.items()
            if value
        },
    },
    "unknown-routes": {
        kind: Bad("GET", path, 404, "not-found")
        for kind, path in {
            "v1": "/v1/nothing",
            "v2": "/v2/tenants/{tid}/ratings",
            "tenant-root": TENANT,
            "under-tenant": TENANT + "/nothing",
            "item-without-score": TENANT + "/items/widget",
            "after-score": TENANT + "/items/widget/score/extra",
            "trailing-slash": RATINGS + "/",
            "empty-item": TENANT + "/items//score",
            "empty-user": TENANT + "/users/",
        }.items()
    },
    "wrong-methods": {
        f"{method}-{kind}": Bad(method, path, 405, "method-not-allowed", allow=allow)
        for method, kind, path, allow in (
            ("PUT", "ratings", RATINGS, "GET, POST"),
            ("PATCH", "ratings", RATINGS, "GET, POST"),
            ("DELETE", "ratings", RATINGS, "GET, POST"),
            ("GET", "rating", RATINGS + "/{rid}", "DELETE"),
            ("PUT", "rating", RATINGS + "/{rid}", "DELETE"),
            ("POST", "score", TENANT + "/items/widget/score", "GET"),
            ("GET", "user", TENANT + "/users/mallory", "DELETE"),
            ("POST", "healthz", "/healthz", "GET"),
        )
    },
}
ALL_CASES = {
    f"{family}/{kind}": case for family, cases in FAMILIES.items() for kind, case in cases.items()
}


@dataclass
class Seeded:
    """A tenant with ratings already stored, what it stores, and values to build requests from."""

    node: RunningNode
    tenant: Tenant
    items: list[str]
    placeholders: dict[str, str] = field(default_factory=dict)

    async def snapshot(self) -> tuple[bytes, ...]:
        """The tenant's listing and scores over HTTP, and both tables of its SQLite file."""
        parts = [await self.read(RATINGS.format(tid=self.tenant.tenant_id) + "?limit=500")]
        for item in self.items:
            parts.append(await self.read(f"/v1/tenants/{self.tenant.tenant_id}/items/{item}/score"))
        path = self.node.storage.stores.path(self.tenant.tenant_id)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            for table in ("ratings", "item_scores"):
                rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                parts.append(repr(rows).encode())
        return tuple(parts)

    async def read(self, path: str) -> bytes:
        url = URL(self.node.url + path, encoded=True)
        async with self.node.session.get(url, headers=self.tenant.headers) as response:
            assert response.status == 200
            return await response.read()

    async def send(self, case: Bad) -> tuple[int, Any, Any]:
        """Send `case` with the tenant's admin key: status, headers and decoded body."""
        path = case.path.format(**self.placeholders)
        query = case.query.format(**self.placeholders)
        url = URL(self.node.url + path + (f"?{query}" if query else ""), encoded=True)
        # A fresh connection each time: after some refusals the server rightly drops the old one.
        headers = {**self.tenant.headers, **dict(case.headers), "Connection": "close"}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        async with self.node.session.request(
            case.method,
            url,
            headers=headers,
            data=case.body,
            skip_auto_headers=("Content-Type",),
            compress=None,
        ) as response:
            raw = await response.read()
            assert response.content_type == "application/problem+json", raw[:300]
            return response.status, response.headers, orjson.loads(raw)


def check_answer(case: Bad, status: int, headers: Any, problem: dict[str, Any]) -> None:
    assert (status, problem["type"]) == (case.status, PROBLEM + case.problem), problem
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert {error["field"] for error in problem.get("errors", [])} == case.fields, problem
    if case.allow is not None:
        assert headers["Allow"] == case.allow


def cursor_of(created_at: Any, rating_id: Any, *more: Any) -> str:
    return b64(orjson.dumps([1, created_at, rating_id, *more]))


@pytest.fixture
async def seeded(node: RunningNode) -> Seeded:
    tenant = node.create_tenant("target", rate_limit=100_000)
    items = ["widget", "gadget", "gizmo"]
    for n, (user, item) in enumerate(
        [("mallory", "widget"), ("trent", "widget"), ("mallory", "gadget"), ("peggy", "gizmo")]
    ):
        async with node.session.post(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers=tenant.headers,
            json={"user_id": user, "item_id": item, "score": n + 2, "comment": f"said {n}"},
        ) as response:
            assert response.status == 201
    # One rating deleted, so tombstones are part of what must not change.
    async with node.session.get(
        node.tenant_url(tenant.tenant_id, "/ratings"), headers=tenant.headers
    ) as response:
        first = (await response.json())["ratings"][0]
    async with node.session.delete(
        node.tenant_url(tenant.tenant_id, f"/ratings/{first['id']}"), headers=tenant.headers
    ) as response:
        assert response.status == 204
    async with node.session.get(
        node.tenant_url(tenant.tenant_id, "/ratings"), headers=tenant.headers, params={"limit": 1}
    ) as response:
        cursor = (await response.json())["next_cursor"]
    version, created_at, rid = orjson.loads(base64.urlsafe_b64decode(cursor + "=="))
    assert version == 1, "the cursor format changed: update the tampering cases"
    tid = tenant.tenant_id
    seeded = Seeded(node, tenant, items)
    seeded.placeholders = {
        "tid": tid,
        "TID": tid.upper(),
        "tid_hex": tid.replace("-", ""),
        "rid": rid,
        "RID": rid.upper(),
        "cursor": cursor,
        "cursor_cut": cursor[:-4],
        "cursor_v2": b64(orjson.dumps([2, created_at, rid])),
        "cursor_time_string": cursor_of(str(created_at), rid),
        "cursor_time_float": cursor_of(created_at + 0.5, rid),
        "cursor_time_huge": cursor_of(2**64 - 1, rid),
        "cursor_id_bad": cursor_of(created_at, "not-a-uuid"),
        "cursor_id_upper": cursor_of(created_at, rid.upper()),
        "cursor_id_newline": cursor_of(created_at, rid + "\n"),
        "cursor_extra": cursor_of(created_at, rid, "more"),
    }
    return seeded


class TestBadRequests:
    @pytest.mark.parametrize("family", list(FAMILIES))
    async def test_refused_with_a_stable_problem(self, seeded: Seeded, family: str) -> None:
        """Each bad request of the family gets its status and problem type, not a 500,
        and the tenant's stored ratings and scores are exactly as they were."""
        failures = []
        for kind, case in FAMILIES[family].items():
            before = await seeded.snapshot()
            status, headers, problem = await seeded.send(case)
            try:
                check_answer(case, status, headers, problem)
            except AssertionError as exc:
                failures.append(f"{kind}: {exc}")
            if await seeded.snapshot() != before:
                failures.append(f"{kind}: changed what is stored")
        assert not failures, "\n".join(failures)

    async def test_whole_barrage_changes_nothing(self, seeded: Seeded) -> None:
        """After every bad request in a row the tenant's ratings and scores are as before."""
        before = await seeded.snapshot()
        statuses = {label: (await seeded.send(case))[0] for label, case in ALL_CASES.items()}
        assert statuses == {label: case.status for label, case in ALL_CASES.items()}
        assert await seeded.snapshot() == before

    async def test_chunked_body_over_the_limit(self, seeded: Seeded) -> None:
        """A chunked body that grows past 16 KiB is a 413 however it is sent."""

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"user_id": "mallory", "item_id": "widget", "score": 3, "comment": "'
            for _ in range(17):
                yield b" " * 1024
            yield b'"}'

        before = await seeded.snapshot()
        async with seeded.node.session.post(
            seeded.node.tenant_url(seeded.tenant.tenant_id, "/ratings"),
            headers={**seeded.tenant.headers, "Content-Type": "application/json"},
            data=chunks(),
        ) as response:
            assert response.status == 413
            assert (await response.json(content_type=None))["type"] == PROBLEM + "payload-too-large"
        assert await seeded.snapshot() == before

    async def test_credentials_are_checked_before_input(self, seeded: Seeded) -> None:
        """Without a credential a malformed request is a 401, telling a stranger nothing more."""
        async with seeded.node.session.post(
            seeded.node.tenant_url("not-a-uuid", "/ratings"), data=b"{"
        ) as response:
            assert response.status == 401

    async def test_an_issued_cursor_is_accepted(self, seeded: Seeded) -> None:
        """The cursor the tampered ones were made from is itself valid (so they fail on merit)."""
        query = "cursor=" + seeded.placeholders["cursor"]
        page = orjson.loads(
            await seeded.read(f"/v1/tenants/{seeded.tenant.tenant_id}/ratings?{query}")
        )
        assert len(page["ratings"]) == 2


async def post(seeded: Seeded, body: bytes, content_type: str = "application/json") -> int:
    async with seeded.node.session.post(
        seeded.node.tenant_url(seeded.tenant.tenant_id, "/ratings"),
        headers={**seeded.tenant.headers, "Content-Type": content_type},
        data=body,
    ) as response:
        return response.status


class TestLimitsAreInclusive:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(rating(user_id="u" * 128), id="user_id-128"),
            pytest.param(rating(item_id="i" * 128), id="item_id-128"),
            pytest.param(rating(comment="c" * 2000), id="comment-2000"),
            pytest.param(rating(comment=None), id="comment-null"),
            pytest.param(rating(score=1), id="score-1"),
            pytest.param(rating(score=5), id="score-5"),
            pytest.param(rating(user_id="zoë 🎉", item_id="日本語 item"), id="unicode-ids"),
            pytest.param(rating(comment="line one\nline two\ttabbed"), id="comment-controls"),
        ],
    )
    async def test_edge_values_are_accepted(self, seeded: Seeded, body: bytes) -> None:
        """Values at the documented limits are stored."""
        assert await post(seeded, body) in (200, 201)

    async def test_body_of_exactly_16_KiB_is_accepted(self, seeded: Seeded) -> None:
        """A body of exactly max_body_bytes (16384) is read; one byte more is a 413."""
        exact = rating(user_id="edge", comment="c" * 100)
        exact = exact[:-1] + b" " * (16384 - len(exact)) + b"}"
        assert len(exact) == 16384
        assert await post(seeded, exact) == 201
        assert await post(seeded, exact[:-1] + b" }") == 413

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json; charset=utf-8",
            "application/json; charset=UTF-8",
            "application/json",
            "application/json;charset=utf-8",
            "Application/JSON",
            'application/json; charset="utf-8"',
            "application/json ; charset=utf-8",
        ],
    )
    async def test_utf8_json_content_types(self, seeded: Seeded, content_type: str) -> None:
        """application/json, with or without an explicit UTF-8 charset, is accepted, in
        whatever case and spacing the header takes (the common spellings are known without
        parsing the header; the others are parsed)."""
        assert await post(seeded, rating(user_id="trent"), content_type) == 200

    async def test_gzip_body_is_accepted(self, seeded: Seeded) -> None:
        """A gzip Content-Encoding that decompresses to a valid body is accepted."""
        async with seeded.node.session.post(
            seeded.node.tenant_url(seeded.tenant.tenant_id, "/ratings"),
            headers={
                **seeded.tenant.headers,
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
            data=gzip.compress(rating(user_id="zipped")),
            compress=None,
        ) as response:
            assert response.status == 201


class TestIdsInPaths:
    @pytest.mark.parametrize(
        "item_id",
        [
            "a b",
            "ü",
            "日本語",
            "🎉",
            "a+b",
            "100%",
            "50%25",
            "a?b",
            "a#b",
            "a&b=c",
            "a;b",
            "~",
            "'\"",
        ],
    )
    async def test_item_id_round_trips_through_the_score_path(
        self, seeded: Seeded, item_id: str
    ) -> None:
        """An item id percent-encoded into the score path reads back the rating stored under it."""
        assert await post(seeded, rating(item_id=item_id, score=5)) == 201
        encoded = quote(item_id, safe="")
        score = orjson.loads(
            await seeded.read(f"/v1/tenants/{seeded.tenant.tenant_id}/items/{encoded}/score")
        )
        assert (score["item_id"], score["count"], score["average"]) == (item_id, 1, 5.0)
        listed = orjson.loads(
            await seeded.read(f"/v1/tenants/{seeded.tenant.tenant_id}/ratings?item_id={encoded}")
        )
        assert [r["item_id"] for r in listed["ratings"]] == [item_id]

    async def test_slash_in_an_item_id(self, seeded: Seeded) -> None:
        """An item id holding '/' is reached as %2F; a raw '/' splits the path and is a 404.

        Path parameters are single segments (OpenAPI style 'simple', RFC 3986), so clients
        must percent-encode '/'; the node decodes the segment exactly once.
        """
        assert await post(seeded, rating(item_id="shelf/book", score=4)) == 201
        tenant = f"/v1/tenants/{seeded.tenant.tenant_id}"
        score = orjson.loads(await seeded.read(f"{tenant}/items/shelf%2Fbook/score"))
        assert (score["item_id"], score["count"]) == ("shelf/book", 1)
        twice = orjson.loads(await seeded.read(f"{tenant}/items/shelf%252Fbook/score"))
        assert (twice["item_id"], twice["count"]) == ("shelf%2Fbook", 0)
        url = URL(f"{seeded.node.url}{tenant}/items/shelf/book/score", encoded=True)
        async with seeded.node.session.get(url, headers=seeded.tenant.headers) as response:
            assert response.status == 404
            assert (await response.json(content_type=None))["type"] == PROBLEM + "not-found"

    async def test_slash_in_a_user_id_is_erased_by_its_encoded_path(self, seeded: Seeded) -> None:
        """A user id holding '/' is erased through /users/<id with %2F>."""
        assert await post(seeded, rating(user_id="org/alice")) == 201
        url = URL(
            seeded.node.tenant_url(seeded.tenant.tenant_id, "/users/org%2Falice"), encoded=True
        )
        async with seeded.node.session.delete(url, headers=seeded.tenant.headers) as response:
            assert await response.json() == {"user_id": "org/alice", "deleted": 1}
