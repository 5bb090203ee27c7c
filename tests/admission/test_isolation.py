"""Tenants are sealed off: no credential of one tenant, and no bad token, reaches another's data."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from yarl import URL

from tests.support import RunningNode, Tenant, ratelimit_fields

ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
ROLES = ("reader", "writer", "admin")
PROBLEM = "urn:edge-node:problem:"
VICTIM_RATE_LIMIT = 100


@dataclass
class Holder:
    """A tenant with its own users, items, comments and ratings, all unique strings."""

    name: str
    tenant: Tenant
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    rating_ids: list[str] = field(default_factory=list)
    first_page_cursor: str = ""

    @property
    def tid(self) -> str:
        return self.tenant.tenant_id

    @property
    def secrets(self) -> list[str]:
        return self.users + self.items + self.comments + self.rating_ids


@dataclass
class Attempt:
    """One request a tenant must refuse: who sends it and what answer is required."""

    label: str
    headers: dict[str, str]
    status: int
    problem: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def seed(node: RunningNode, name: str) -> Holder:
    holder = Holder(name, node.create_tenant(name, rate_limit=VICTIM_RATE_LIMIT))
    mark = uuid.uuid4().hex[:8]
    holder.users = [f"{name}-user-{n}-{mark}" for n in range(2)]
    holder.items = [f"{name}-item-{n}-{mark}" for n in range(2)]
    for user in holder.users:
        for item in holder.items:
            comment = f"{name} secret words {user} {item}"
            async with node.session.post(
                node.tenant_url(holder.tid, "/ratings"),
                headers=holder.tenant.headers,
                json={"user_id": user, "item_id": item, "score": 4, "comment": comment},
            ) as response:
                assert response.status == 201
                holder.rating_ids.append((await response.json())["id"])
            holder.comments.append(comment)
    async with node.session.get(
        node.tenant_url(holder.tid, "/ratings"), headers=holder.tenant.headers, params={"limit": 1}
    ) as response:
        holder.first_page_cursor = (await response.json())["next_cursor"]
    return holder


async def snapshot(node: RunningNode, holder: Holder) -> tuple[bytes, ...]:
    """Everything a tenant stores, as its own admin reads it over HTTP and as its file holds it."""
    parts = []
    async with node.session.get(
        node.tenant_url(holder.tid, "/ratings"),
        headers=holder.tenant.headers,
        params={"limit": "500"},
    ) as response:
        assert response.status == 200
        parts.append(await response.read())
    for item in holder.items:
        async with node.session.get(
            node.tenant_url(holder.tid, f"/items/{item}/score"), headers=holder.tenant.headers
        ) as response:
            assert response.status == 200
            parts.append(await response.read())
    path = node.storage.stores.path(holder.tid)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        for table in ("ratings", "item_scores"):
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            parts.append(repr(rows).encode())
    return tuple(parts)


async def remaining_tokens(node: RunningNode, holder: Holder) -> int:
    async with node.session.get(
        node.tenant_url(holder.tid, "/items/none/score"), headers=holder.tenant.headers
    ) as response:
        return int(ratelimit_fields(response.headers)["minute"]["r"])


def other_tenant_credentials(node: RunningNode, attacker: Holder, victim: Holder) -> list[Attempt]:
    """Every valid credential of `attacker`: its keys, and tokens of each role and algorithm."""
    registry = node.storage.registry
    keys = {"admin": attacker.tenant.api_key}
    for role in ("reader", "writer"):
        keys[role] = registry.create_key(attacker.tid, role).api_key  # type: ignore[arg-type]
    attempts = [
        Attempt(f"{attacker.name} {role} key", {"X-API-Key": key}, 403, "tenant-mismatch")
        for role, key in keys.items()
    ]
    for role in ROLES:
        for algorithm in ALGORITHMS:
            token = node.token(attacker.tid, role, algorithm=algorithm)
            attempts.append(
                Attempt(
                    f"{attacker.name} {role} {algorithm} token",
                    {"Authorization": f"Bearer {token}"},
                    403,
                    "tenant-mismatch",
                )
            )
    for role in ("writer", "admin"):
        # Bound to a user id the victim has: the binding must not cross tenants.
        token = node.token(attacker.tid, role, sub=victim.users[0])
        attempts.append(
            Attempt(
                f"{attacker.name} {role} token bound to {victim.users[0]}",
                {"Authorization": f"Bearer {token}"},
                403,
                "tenant-mismatch",
            )
        )
    return attempts


def foreign_key(algorithm: str) -> Any:
    return {
        "HS256": lambda: b"an-attacker-secret-of-plenty-of-bytes-0123456789",
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[algorithm]()


def bad_tokens_naming(node: RunningNode, victim: Holder, forgers: dict[str, Any]) -> list[Attempt]:
    """Tokens claiming the victim's tenant that must not verify: forged, expired, unsigned."""
    claims = {"tenant_id": victim.tid, "role": "admin", "exp": int(time.time()) + 300}
    attempts = []
    for algorithm in ALGORITHMS:
        forged = jwt.encode(claims, forgers[algorithm], algorithm=algorithm)
        attempts.append(
            Attempt(
                f"{algorithm} token forged for {victim.name}",
                {"Authorization": f"Bearer {forged}"},
                401,
                "invalid-token",
            )
        )
        expired = node.token(victim.tid, "admin", algorithm=algorithm, ttl=-60)
        attempts.append(
            Attempt(
                f"expired {algorithm} token of {victim.name}",
                {"Authorization": f"Bearer {expired}"},
                401,
                "expired-token",
            )
        )
    body = f"{b64url(orjson.dumps({'alg': 'none', 'typ': 'JWT'}))}.{b64url(orjson.dumps(claims))}"
    attempts.append(
        Attempt(
            f"alg none token for {victim.name}",
            {"Authorization": f"Bearer {body}."},
            401,
            "invalid-token",
        )
    )
    pem = node.keys.rs256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused_input = (
        f"{b64url(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64url(orjson.dumps(claims))}"
    )
    confused = hmac.new(pem, confused_input.encode(), hashlib.sha256).digest()
    attempts.append(
        Attempt(
            f"HS256 token keyed with the RS256 public key for {victim.name}",
            {"Authorization": f"Bearer {confused_input}.{b64url(confused)}"},
            401,
            "invalid-token",
        )
    )
    return attempts


def route_request(route: str, victim: Holder) -> tuple[str, str, dict[str, str], Any]:
    """Method, path under the victim's tenant, query and JSON body for one route."""
    user, item = victim.users[0], victim.items[0]
    return {
        "post": ("POST", "/ratings", {}, {"user_id": user, "item_id": item, "score": 1}),
        "list": ("GET", "/ratings", {}, None),
        "list-by-item": ("GET", "/ratings", {"item_id": item}, None),
        "list-by-user": ("GET", "/ratings", {"user_id": user}, None),
        "list-from-cursor": ("GET", "/ratings", {"cursor": victim.first_page_cursor}, None),
        "score": ("GET", f"/items/{quote(item, safe='')}/score", {}, None),
        "delete-rating": ("DELETE", f"/ratings/{victim.rating_ids[0]}", {}, None),
        "erase-user": ("DELETE", f"/users/{quote(user, safe='')}", {}, None),
    }[route]


ROUTES = (
    "post",
    "list",
    "list-by-item",
    "list-by-user",
    "list-from-cursor",
    "score",
    "delete-rating",
    "erase-user",
)


@pytest.fixture
async def tenants(node: RunningNode) -> list[Holder]:
    return [await seed(node, name) for name in ("acme", "globex", "initech")]


@pytest.fixture(scope="module")
def forgers() -> dict[str, Any]:
    return {algorithm: foreign_key(algorithm) for algorithm in ALGORITHMS}


class TestCrossTenantAccess:
    @pytest.mark.parametrize("route", ROUTES)
    async def test_no_foreign_or_bad_credential_gets_through(
        self, node: RunningNode, tenants: list[Holder], forgers: dict[str, Any], route: str
    ) -> None:
        """Every other tenant's key and token, and every forged, expired or unsigned token,
        is refused on this route; no answer leaks the victim's data and nothing changes."""
        before = {h.tid: await snapshot(node, h) for h in tenants}
        tokens_before = {h.tid: await remaining_tokens(node, h) for h in tenants}
        failures = []
        attempts_made = 0
        for victim in tenants:
            attempts = bad_tokens_naming(node, victim, forgers)
            for attacker in tenants:
                if attacker is not victim:
                    attempts += other_tenant_credentials(node, attacker, victim)
            method, path, query, body = route_request(route, victim)
            url = URL(node.tenant_url(victim.tid, path), encoded=True).with_query(query)
            sent = str(url) + (orjson.dumps(body).decode() if body else "")
            for attempt in attempts:
                attempts_made += 1
                async with node.session.request(
                    method, url, headers=attempt.headers, json=body
                ) as response:
                    raw = (await response.read()).decode()
                    got = (response.status, response.content_type)
                if got != (attempt.status, "application/problem+json"):
                    failures.append(f"{attempt.label}: {got} {raw[:200]}")
                    continue
                if orjson.loads(raw)["type"] != PROBLEM + attempt.problem:
                    failures.append(f"{attempt.label}: {raw[:200]}")
                leaked = [s for s in victim.secrets if s in raw and s not in sent]
                if leaked:
                    failures.append(f"{attempt.label} leaked {leaked}")
        assert not failures, "\n".join(failures)
        assert attempts_made > 100
        for holder in tenants:
            # Refused requests never draw on the victim's bucket; only this read of its own did.
            assert await remaining_tokens(node, holder) >= tokens_before[holder.tid] - 1
        assert {h.tid: await snapshot(node, h) for h in tenants} == before

    async def test_foreign_ids_through_ones_own_tenant_find_nothing(
        self, node: RunningNode, tenants: list[Holder]
    ) -> None:
        """Naming another tenant's rating, user or item under one's own tenant finds nothing."""
        before = {h.tid: await snapshot(node, h) for h in tenants}
        for attacker in tenants:
            for victim in tenants:
                if victim is attacker:
                    continue
                own = attacker.tenant.headers
                base = node.tenant_url(attacker.tid)
                for rating_id in victim.rating_ids:
                    async with node.session.delete(
                        f"{base}/ratings/{rating_id}", headers=own
                    ) as response:
                        assert response.status == 404
                        text = await response.text()
                        assert "rating-not-found" in text
                for user in victim.users:
                    async with node.session.get(
                        f"{base}/ratings", headers=own, params={"user_id": user}
                    ) as response:
                        assert await response.json() == {"ratings": [], "next_cursor": None}
                    async with node.session.delete(f"{base}/users/{user}", headers=own) as response:
                        assert await response.json() == {"user_id": user, "deleted": 0}
                for item in victim.items:
                    async with node.session.get(
                        f"{base}/items/{item}/score", headers=own
                    ) as response:
                        assert (await response.json())["count"] == 0
                async with node.session.get(
                    f"{base}/ratings", headers=own, params={"cursor": victim.first_page_cursor}
                ) as response:
                    listed = await response.text()
                    assert not [s for s in victim.secrets if s in listed]
        assert {h.tid: await snapshot(node, h) for h in tenants} == before

    async def test_same_user_and_item_names_stay_apart(self, node: RunningNode) -> None:
        """Two tenants rating the same user and item ids get separate ratings and scores."""
        first, second = node.create_tenant("one"), node.create_tenant("two")
        ids = []
        for tenant, score in ((first, 5), (second, 1)):
            async with node.session.post(
                node.tenant_url(tenant.tenant_id, "/ratings"),
                headers=tenant.headers,
                json={"user_id": "shared-user", "item_id": "shared-item", "score": score},
            ) as response:
                assert response.status == 201
                ids.append((await response.json())["id"])
        assert ids[0] != ids[1]
        for tenant, average in ((first, 5.0), (second, 1.0)):
            async with node.session.get(
                node.tenant_url(tenant.tenant_id, "/items/shared-item/score"),
                headers=tenant.headers,
            ) as response:
                score = await response.json()
            assert (score["count"], score["average"]) == (1, average)
        async with node.session.delete(
            node.tenant_url(first.tenant_id, "/users/shared-user"), headers=first.headers
        ) as response:
            assert (await response.json())["deleted"] == 1
        async with node.session.get(
            node.tenant_url(second.tenant_id, "/ratings"), headers=second.headers
        ) as response:
            assert [r["id"] for r in (await response.json())["ratings"]] == [ids[1]]
