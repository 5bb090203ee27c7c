"""A property over real HTTP: for random tenants, credentials, roles and routes, no response
carries another tenant's data and no request changes another tenant's stored rows.

Three tenants on one real node on loopback (its own thread and event loop), each seeded with
ratings whose users, items and comments are unique to it. Hypothesis draws who asks (any
tenant's key of any role, a token of any algorithm and role, bound to a user or not, or a
token signed by a key the node does not trust), which tenant's path it asks at, and what:
list (with filters naming anyone's users and items), score, write, delete a rating, erase a
user. After every request: no answer is a 5xx; no answer holds a string of a tenant other
than the credential's own unless the request itself sent it (an echoed path id); and every
tenant but the credential's own has byte-for-byte the same rows in its SQLite file.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import RunningNode, SigningKeys, make_token, node_config, start_node

EXAMPLES = int(os.environ.get("EDGE_NODE_PROPERTY_EXAMPLES", "60"))
ROLES = ("reader", "writer", "admin")
ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
UNTRUSTED_SECRET = b"a-secret-this-node-has-never-been-told-about"


@dataclass
class Holder:
    """A tenant, its keys by role, and every string that belongs to it alone."""

    tenant_id: str
    marker: str
    keys: dict[str, str]
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    rating_ids: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return [
            *self.comments,
            f"{self.marker} rewrote",
            *self.rating_ids,
            *self.users,
            *self.items,
        ]


@dataclass
class World:
    node: RunningNode
    loop: asyncio.AbstractEventLoop
    port: int
    holders: list[Holder]

    def snapshot(self, holder: Holder) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the tenant's SQLite file, read as another process would."""
        path = self.node.config.data_path / "tenants" / f"{holder.tenant_id}.sqlite"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {
                table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in tables
            }
        finally:
            conn.close()


def _serve(tmp_path: Path, keys: SigningKeys) -> tuple[RunningNode, Any, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    config = node_config(tmp_path / "var", keys, **{"limits.header_timeout_seconds": 120.0})
    node, runner = asyncio.run_coroutine_threadsafe(start_node(config, keys), loop).result(30)
    return node, runner, loop


def _seed(node: RunningNode, port: int, index: int) -> Holder:
    tenant = node.create_tenant(f"tenant-{index}", rate_limit=100_000_000)
    marker = f"t{index}x{uuid.uuid4().hex[:8]}"
    keys = {"admin": tenant.api_key}
    for role in ("reader", "writer"):
        keys[role] = node.storage.registry.create_key(tenant.tenant_id, role).api_key  # type: ignore[arg-type]
    holder = Holder(tenant.tenant_id, marker, keys)
    for n in range(3):
        user, item, comment = f"{marker}-user{n}", f"{marker}-item{n % 2}", f"{marker} says {n}"
        status, body = request(
            port,
            "POST",
            f"/v1/tenants/{tenant.tenant_id}/ratings",
            {"X-API-Key": tenant.api_key},
            {"user_id": user, "item_id": item, "score": 1 + n, "comment": comment},
        )
        assert status == 201, body
        holder.users.append(user)
        holder.items.append(item)
        holder.comments.append(comment)
        holder.rating_ids.append(orjson.loads(body)["id"])
    return holder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, signing_keys: SigningKeys) -> Iterator[World]:
    node, runner, loop = _serve(tmp_path_factory.mktemp("property"), signing_keys)
    port = int(node.url.rsplit(":", 1)[1])
    try:
        yield World(node, loop, port, [_seed(node, port, i) for i in range(3)])
    finally:

        async def stop() -> None:
            await node.session.close()
            await runner.cleanup()
            await node.meter.close()
            node.storage.close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        deadline = time.monotonic() + 10
        while loop.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        # Closed, or its self-pipe socket is left to the garbage collector, whose
        # ResourceWarning then fails whichever test happens to be running.
        loop.close()


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else orjson.dumps(body)
        sent = {**headers, **({"Content-Type": "application/json"} if payload else {})}
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@st.composite
def credentials(draw: st.DrawFn, world: World, actor: Holder) -> tuple[dict[str, str], str]:
    """Headers carrying one credential of `actor`, and a label saying which."""
    kind = draw(st.sampled_from(["key", "token", "bound-token", "untrusted-token"]))
    role = draw(st.sampled_from(ROLES))
    if kind == "key":
        return {"X-API-Key": actor.keys[role]}, f"{role} key"
    if kind == "untrusted-token":
        token = jwt.encode(
            {"tenant_id": actor.tenant_id, "role": "admin", "exp": 4102444800},
            UNTRUSTED_SECRET,
            algorithm="HS256",
        )
        return {"Authorization": f"Bearer {token}"}, "untrusted token"
    algorithm = draw(st.sampled_from(ALGORITHMS))
    sub = draw(st.sampled_from(actor.users)) if kind == "bound-token" else None
    token = make_token(world.node.keys, actor.tenant_id, role, algorithm=algorithm, sub=sub)
    return {"Authorization": f"Bearer {token}"}, f"{role} {algorithm} token sub={sub}"


@st.composite
def calls(draw: st.DrawFn, world: World) -> dict[str, Any]:
    """One request: who sends it, to whose path, on which route, naming whose ids."""
    actor = draw(st.sampled_from(world.holders))
    target = draw(st.sampled_from(world.holders))
    named = draw(st.sampled_from(world.holders))  # whose users/items/ids the request names
    headers, label = draw(credentials(world, actor))
    base = f"/v1/tenants/{target.tenant_id}"
    route = draw(st.sampled_from(["list", "score", "post", "delete", "erase"]))
    body = None
    if route == "list":
        query = draw(
            st.dictionaries(
                st.sampled_from(["user_id", "item_id", "limit"]),
                st.sampled_from([*named.users, *named.items, "1", "2"]),
                max_size=2,
            )
        )
        path = (
            base
            + "/ratings"
            + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        )
        method = "GET"
    elif route == "score":
        method, path = "GET", f"{base}/items/{draw(st.sampled_from(named.items))}/score"
    elif route == "post":
        # Writes use the actor's own strings: whatever lands in a tenant is its own.
        method, path = "POST", base + "/ratings"
        body = {
            "user_id": draw(st.sampled_from(actor.users)),
            "item_id": f"{actor.marker}-item{draw(st.integers(0, 3))}",
            "score": draw(st.integers(1, 5)),
            "comment": f"{actor.marker} rewrote",
        }
    elif route == "delete":
        method, path = "DELETE", f"{base}/ratings/{draw(st.sampled_from(named.rating_ids))}"
    else:
        method, path = "DELETE", f"{base}/users/{draw(st.sampled_from(named.users))}"
    return {
        "actor": actor,
        "method": method,
        "path": path,
        "headers": headers,
        "body": body,
        "label": label,
    }


class TestCrossTenantProperty:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_no_request_reads_or_changes_another_tenant(
        self, world: World, data: st.DataObject
    ) -> None:
        """Whatever credential, role, tenant path and route: no 5xx, no foreign tenant's
        strings in the answer beyond what the request sent, no foreign row changed."""
        call = data.draw(calls(world))
        actor: Holder = call["actor"]
        others = [h for h in world.holders if h is not actor]
        before = {h.tenant_id: world.snapshot(h) for h in others}
        status, body = request(
            world.port, call["method"], call["path"], call["headers"], call["body"]
        )
        sent = call["path"] + orjson.dumps(call["body"]).decode()
        answer = body.decode()
        assert status < 500, (call["label"], call["path"], answer)
        for other in others:
            for secret in other.secrets:
                if secret not in sent:
                    assert secret not in answer, (call["label"], call["path"], secret)
            assert world.snapshot(other) == before[other.tenant_id], (call["label"], call["path"])
