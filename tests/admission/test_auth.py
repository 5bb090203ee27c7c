"""Who may do what: roles and user binding, API keys, JWTs, tenant status and rate limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from multidict import CIMultiDictProxy

from edge_node.tenants.apikeys import checksum
from tests.support import RunningNode, Tenant, ratelimit_fields

ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
PROBLEM = "urn:edge-node:problem:"


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any


async def call(
    node: RunningNode,
    method: str,
    url: str,
    headers: dict[str, str],
    json: Any = None,
) -> Answer:
    async with node.session.request(method, url, headers=headers, json=json) as response:
        raw = await response.read()
        body = orjson.loads(raw) if raw else None
        if response.status >= 400:
            assert response.content_type == "application/problem+json"
            assert body["status"] == response.status
        return Answer(response.status, response.headers, body)


def checksummed(body: str) -> str:
    return body + checksum(body)


def swap_two_different(key: str, start: int) -> str:
    """`key` with the first two adjacent, different characters from `start` on swapped."""
    i = next(i for i in range(start, len(key) - 1) if key[i] != key[i + 1])
    return key[:i] + key[i + 1] + key[i] + key[i + 2 :]


def problem_type(answer: Answer) -> str:
    return answer.body["type"].removeprefix(PROBLEM)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A JWS assembled by hand, for tokens PyJWT refuses to produce."""
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(payload))}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def claims(tenant_id: str, role: str = "admin", **extra: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "role": role, "exp": int(time.time()) + 300, **extra}


def foreign_key(algorithm: str) -> Any:
    """A private key of the right type that the node does not trust."""
    return {
        "HS256": lambda: b"not-the-node-secret-but-long-enough-0123456789",
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[algorithm]()


async def raw_request(node: RunningNode, path: str, header_line: bytes) -> int:
    """Send a GET whose header bytes no client library would produce; the status it got."""
    host, port = node.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n"
            + header_line
            + b"\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


@dataclass
class Seeded:
    """A tenant holding ratings by ana and bo, and the ids of those ratings."""

    tenant: Tenant
    ana_rating: str
    bo_rating: str


@pytest.fixture
async def seeded(node: RunningNode) -> Seeded:
    tenant = node.create_tenant("roles", rate_limit=100_000)
    ids = []
    for user in ("ana", "bo"):
        answer = await call(
            node,
            "POST",
            node.tenant_url(tenant.tenant_id, "/ratings"),
            tenant.headers,
            {"user_id": user, "item_id": "book", "score": 4, "comment": f"{user} says"},
        )
        assert answer.status == 201
        ids.append(answer.body["id"])
    return Seeded(tenant, *ids)


async def listing(node: RunningNode, tenant: Tenant) -> list[dict[str, Any]]:
    answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), tenant.headers)
    assert answer.status == 200
    return answer.body["ratings"]


def role_key(node: RunningNode, tenant: Tenant, role: str) -> dict[str, str]:
    return {"X-API-Key": node.storage.registry.create_key(tenant.tenant_id, role).api_key}  # type: ignore[arg-type]


class TestRoles:
    @pytest.mark.parametrize("credential", ["key", "jwt"])
    async def test_reader_reads_but_does_not_write(
        self, node: RunningNode, seeded: Seeded, credential: str
    ) -> None:
        """A reader lists and scores, and every write is a 403 insufficient-role."""
        tid = seeded.tenant.tenant_id
        headers = (
            role_key(node, seeded.tenant, "reader")
            if credential == "key"
            else bearer(node.token(tid, "reader", sub="ana"))
        )
        before = await listing(node, seeded.tenant)
        for path in ("/ratings", "/items/book/score"):
            assert (await call(node, "GET", node.tenant_url(tid, path), headers)).status == 200
        refused = [
            await call(
                node,
                "POST",
                node.tenant_url(tid, "/ratings"),
                headers,
                {"user_id": "ana", "item_id": "film", "score": 1},
            ),
            await call(
                node, "DELETE", node.tenant_url(tid, f"/ratings/{seeded.ana_rating}"), headers
            ),
            await call(node, "DELETE", node.tenant_url(tid, "/users/ana"), headers),
        ]
        assert [(a.status, problem_type(a)) for a in refused] == [(403, "insufficient-role")] * 3
        assert await listing(node, seeded.tenant) == before

    @pytest.mark.parametrize("credential", ["key", "jwt"])
    async def test_unbound_writer_writes_but_does_not_delete(
        self, node: RunningNode, seeded: Seeded, credential: str
    ) -> None:
        """A writer with no bound user may POST for anyone, but deletes and erasures are 403."""
        tid = seeded.tenant.tenant_id
        headers = (
            role_key(node, seeded.tenant, "writer")
            if credential == "key"
            else bearer(node.token(tid, "writer"))
        )
        posted = await call(
            node,
            "POST",
            node.tenant_url(tid, "/ratings"),
            headers,
            {"user_id": "cy", "item_id": "book", "score": 2},
        )
        assert posted.status == 201
        before = await listing(node, seeded.tenant)
        refused = [
            await call(
                node, "DELETE", node.tenant_url(tid, f"/ratings/{seeded.ana_rating}"), headers
            ),
            await call(node, "DELETE", node.tenant_url(tid, "/users/ana"), headers),
        ]
        assert [(a.status, problem_type(a)) for a in refused] == [(403, "not-own-rating")] * 2
        assert await listing(node, seeded.tenant) == before

    async def test_bound_writer_acts_only_for_its_user(
        self, node: RunningNode, seeded: Seeded
    ) -> None:
        """A writer token with sub=ana rates, deletes and erases as ana, and never as bo."""
        tid = seeded.tenant.tenant_id
        headers = bearer(node.token(tid, "writer", sub="ana"))
        as_bo = await call(
            node,
            "POST",
            node.tenant_url(tid, "/ratings"),
            headers,
            {"user_id": "bo", "item_id": "film", "score": 1},
        )
        delete_bo = await call(
            node, "DELETE", node.tenant_url(tid, f"/ratings/{seeded.bo_rating}"), headers
        )
        erase_bo = await call(node, "DELETE", node.tenant_url(tid, "/users/bo"), headers)
        for answer in (as_bo, delete_bo, erase_bo):
            assert (answer.status, problem_type(answer)) == (403, "not-own-rating")
        assert [r["user_id"] for r in await listing(node, seeded.tenant)] == ["ana", "bo"]

        as_ana = await call(
            node,
            "POST",
            node.tenant_url(tid, "/ratings"),
            headers,
            {"user_id": "ana", "item_id": "film", "score": 5},
        )
        assert as_ana.status == 201
        delete_ana = await call(
            node, "DELETE", node.tenant_url(tid, f"/ratings/{seeded.ana_rating}"), headers
        )
        assert delete_ana.status == 204
        erase_ana = await call(node, "DELETE", node.tenant_url(tid, "/users/ana"), headers)
        assert (erase_ana.status, erase_ana.body) == (200, {"user_id": "ana", "deleted": 1})
        assert [r["user_id"] for r in await listing(node, seeded.tenant)] == ["bo"]

    @pytest.mark.parametrize("credential", ["key", "jwt", "jwt-bound"])
    async def test_admin_does_everything(
        self, node: RunningNode, seeded: Seeded, credential: str
    ) -> None:
        """An admin (key, token, or token with a sub) writes, deletes and erases for any user."""
        tid = seeded.tenant.tenant_id
        headers = {
            "key": seeded.tenant.headers,
            "jwt": bearer(node.token(tid, "admin")),
            "jwt-bound": bearer(node.token(tid, "admin", sub="someone-else")),
        }[credential]
        posted = await call(
            node,
            "POST",
            node.tenant_url(tid, "/ratings"),
            headers,
            {"user_id": "cy", "item_id": "book", "score": 2},
        )
        assert posted.status == 201
        deleted = await call(
            node, "DELETE", node.tenant_url(tid, f"/ratings/{seeded.ana_rating}"), headers
        )
        assert deleted.status == 204
        erased = await call(node, "DELETE", node.tenant_url(tid, "/users/bo"), headers)
        assert (erased.status, erased.body) == (200, {"user_id": "bo", "deleted": 1})
        assert [r["user_id"] for r in await listing(node, seeded.tenant)] == ["cy"]


class TestApiKeys:
    async def test_missing_credentials(self, node: RunningNode) -> None:
        """A request with no credential is a 401 missing-credentials with a challenge."""
        tenant = node.create_tenant()
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), {})
        assert (answer.status, problem_type(answer)) == (401, "missing-credentials")
        assert "Bearer" in answer.headers["WWW-Authenticate"]

    @pytest.mark.parametrize(
        "make_key",
        [
            pytest.param(lambda real: "enk_0123456789abcdef_" + "A" * 43, id="unknown-legacy"),
            pytest.param(
                lambda real: checksummed("enk_0123456789abcdef_" + "A" * 40), id="unknown"
            ),
            pytest.param(
                lambda real: checksummed(
                    real[:25] + ("B" if real[25] != "B" else "C") + real[26:-6]
                ),
                id="another-secret-same-id",
            ),
        ],
    )
    async def test_unknown_key_is_401_invalid(self, node: RunningNode, make_key: Any) -> None:
        """A well-formed key (checksum right, or the legacy format) that the registry does not
        hold is 401 invalid-api-key with WWW-Authenticate."""
        tenant = node.create_tenant()
        headers = {"X-API-Key": make_key(tenant.api_key)}
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), headers)
        assert (answer.status, problem_type(answer)) == (401, "invalid-api-key")
        assert answer.headers["WWW-Authenticate"]

    @pytest.mark.parametrize(
        "make_key",
        [
            pytest.param(lambda real: real[:-1] + ("B" if real[-1] != "B" else "C"), id="wrong"),
            pytest.param(lambda real: swap_two_different(real, 30), id="swapped"),
            pytest.param(lambda real: real.replace("enk_", "xyz_", 1), id="wrong-prefix"),
            pytest.param(lambda real: real[:-1], id="truncated"),
            pytest.param(lambda real: real[:21], id="truncated-to-id"),
            pytest.param(lambda real: "garbage", id="garbage"),
            pytest.param(lambda real: "", id="empty"),
            pytest.param(lambda real: real + "é", id="non-ascii"),
        ],
    )
    async def test_mistyped_key_is_401_malformed(self, node: RunningNode, make_key: Any) -> None:
        """A key whose checksum fails, or that is not shaped like a key, is 401
        malformed-api-key (not invalid-api-key) with WWW-Authenticate."""
        tenant = node.create_tenant()
        headers = {"X-API-Key": make_key(tenant.api_key)}
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), headers)
        assert (answer.status, problem_type(answer)) == (401, "malformed-api-key")
        assert answer.headers["WWW-Authenticate"]

    async def test_a_mistyped_key_is_refused_without_a_database_lookup(
        self, node: RunningNode
    ) -> None:
        """node.sqlite runs no statement on api_keys for a key whose checksum fails, and one
        for a well-formed key."""
        tenant = node.create_tenant()
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        statements: list[str] = []
        node.storage.node_database.set_trace_callback(statements.append)
        try:
            last = "1" if tenant.api_key.endswith("0") else "0"
            await call(node, "GET", url, {"X-API-Key": tenant.api_key[:-1] + last})
            mistyped = [sql for sql in statements if "api_keys" in sql]
            await call(node, "GET", url, tenant.headers)
            well_formed = [sql for sql in statements if "api_keys" in sql]
        finally:
            node.storage.node_database.set_trace_callback(None)
        assert mistyped == []
        assert len(well_formed) == 1

    async def test_revoked_key_is_told_apart_from_a_mistyped_one(self, node: RunningNode) -> None:
        """Once revoked, a key is invalid-api-key while the same key mistyped is
        malformed-api-key."""
        tenant = node.create_tenant()
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        node.storage.registry.revoke_key(tenant.key_id)
        revoked = await call(node, "GET", url, tenant.headers)
        mistyped = await call(node, "GET", url, {"X-API-Key": tenant.api_key[:-2]})
        assert problem_type(revoked) == "invalid-api-key"
        assert problem_type(mistyped) == "malformed-api-key"

    async def test_legacy_key_keeps_working(self, node: RunningNode) -> None:
        """A key issued in the format without a checksum (its hash stored as before) is still
        accepted with its role."""
        tenant = node.create_tenant()
        legacy = "enk_00112233445566aa_" + "x-_Y" * 10 + "abc"
        node.storage.node_database.execute(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, role, created_at)"
            " VALUES ('00112233445566aa', ?, ?, 'reader', 0)",
            (tenant.tenant_id, hashlib.sha256(legacy.encode()).hexdigest()),
        )
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        assert (await call(node, "GET", url, {"X-API-Key": legacy})).status == 200
        refused = await call(
            node, "DELETE", url + "/00000000-0000-4000-8000-000000000000", {"X-API-Key": legacy}
        )
        assert problem_type(refused) == "insufficient-role"

    @pytest.mark.parametrize("tail", [b"\xff\xfe", b"\x80"], ids=["ff-fe", "lone-continuation"])
    async def test_key_with_undecodable_bytes_is_401(self, node: RunningNode, tail: bytes) -> None:
        """A real key followed by bytes that are not UTF-8 is refused with 401, not a 500."""
        tenant = node.create_tenant()
        path = f"/v1/tenants/{tenant.tenant_id}/ratings"
        header = b"X-API-Key: " + tenant.api_key.encode() + tail
        assert await raw_request(node, path, header) == 401
        assert await raw_request(node, path, b"X-API-Key: enk_" + tail * 8 + b"_secret") == 401

    async def test_key_revoked_while_running_is_refused_at_once(self, node: RunningNode) -> None:
        """Once a key is revoked in the registry the very next request with it is a 401."""
        tenant = node.create_tenant()
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        spare = role_key(node, tenant, "reader")
        assert (await call(node, "GET", url, tenant.headers)).status == 200
        node.storage.registry.revoke_key(tenant.key_id)
        answer = await call(node, "GET", url, tenant.headers)
        assert (answer.status, problem_type(answer)) == (401, "invalid-api-key")
        assert answer.headers["WWW-Authenticate"]
        assert (await call(node, "GET", url, spare)).status == 200, "other keys still work"

    async def test_key_created_while_running_works_at_once(self, node: RunningNode) -> None:
        """A key issued while the node runs is accepted on its first request with its role."""
        tenant = node.create_tenant()
        writer = role_key(node, tenant, "writer")
        answer = await call(
            node,
            "POST",
            node.tenant_url(tenant.tenant_id, "/ratings"),
            writer,
            {"user_id": "u", "item_id": "i", "score": 3},
        )
        assert answer.status == 201


class TestTokens:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_each_algorithm_is_accepted(self, node: RunningNode, algorithm: str) -> None:
        """A token signed with any configured algorithm's key is accepted with its role."""
        tenant = node.create_tenant()
        headers = bearer(node.token(tenant.tenant_id, "writer", algorithm=algorithm))
        answer = await call(
            node,
            "POST",
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers,
            {"user_id": "u", "item_id": "i", "score": 3},
        )
        assert answer.status == 201

    async def test_scheme_is_case_insensitive(self, node: RunningNode) -> None:
        """'bearer' in lower case is the same scheme (RFC 9110 auth schemes ignore case)."""
        tenant = node.create_tenant()
        headers = {"Authorization": f"bearer {node.token(tenant.tenant_id)}"}
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), headers)
        assert answer.status == 200

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_expired_token(self, node: RunningNode, algorithm: str) -> None:
        """A correctly signed token past its exp is a 401 expired-token."""
        tenant = node.create_tenant()
        token = node.token(tenant.tenant_id, algorithm=algorithm, ttl=-30)
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "expired-token")
        assert answer.headers["WWW-Authenticate"]

    async def test_accepted_token_is_refused_once_it_expires(self, node: RunningNode) -> None:
        """A token that worked stops working when exp passes, though the node cached it."""
        tenant = node.create_tenant()
        exp = int(time.time()) + 2
        token = jwt.encode(
            {"tenant_id": tenant.tenant_id, "role": "reader", "exp": exp},
            node.keys.hs256,
            algorithm="HS256",
        )
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        assert (await call(node, "GET", url, bearer(token))).status == 200
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        answer = await call(node, "GET", url, bearer(token))
        assert (answer.status, problem_type(answer)) == (401, "expired-token")

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_forged_signature(self, node: RunningNode, algorithm: str) -> None:
        """A token signed by a key the node does not trust is a 401 invalid-token."""
        tenant = node.create_tenant()
        token = jwt.encode(claims(tenant.tenant_id), foreign_key(algorithm), algorithm=algorithm)
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")

    async def test_altered_payload(self, node: RunningNode) -> None:
        """Swapping a signed reader token's payload for an admin one breaks the signature: 401."""
        tenant = node.create_tenant()
        header, _, signature = node.token(tenant.tenant_id, "reader").split(".")
        admin_payload = b64url(orjson.dumps(claims(tenant.tenant_id, "admin")))
        answer = await call(
            node,
            "DELETE",
            node.tenant_url(tenant.tenant_id, "/users/anyone"),
            bearer(f"{header}.{admin_payload}.{signature}"),
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    async def test_unsigned_token(self, node: RunningNode, alg: str) -> None:
        """A token with alg none (any spelling) and no signature is a 401."""
        tenant = node.create_tenant()
        token = hand_made_token({"alg": alg, "typ": "JWT"}, claims(tenant.tenant_id))
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")

    async def test_rsa_public_key_as_hmac_secret(self, node: RunningNode) -> None:
        """HS256 signed with the RS256 public key PEM (algorithm confusion) is a 401."""
        tenant = node.create_tenant()
        pem = node.keys.rs256.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = hand_made_token(
            {"alg": "HS256", "typ": "JWT"},
            claims(tenant.tenant_id),
            lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
        )
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"tenant_id": None}, id="no-tenant_id"),
            pytest.param({"role": None}, id="no-role"),
            pytest.param({"exp": None}, id="no-exp"),
            pytest.param({"role": "superuser"}, id="unknown-role"),
            pytest.param({"role": "Admin"}, id="role-wrong-case"),
            pytest.param({"role": ["admin"]}, id="role-not-a-string"),
            pytest.param({"tenant_id": "acme"}, id="tenant-not-uuid"),
            pytest.param({"tenant_id": 42}, id="tenant-not-a-string"),
            pytest.param({"exp": "tomorrow"}, id="exp-not-a-number"),
            pytest.param({"sub": 7}, id="sub-not-a-string"),
        ],
    )
    async def test_bad_claims(self, node: RunningNode, change: dict[str, Any]) -> None:
        """A well-signed token with a missing or ill-typed required claim is a 401."""
        tenant = node.create_tenant()
        payload = {**claims(tenant.tenant_id), **change}
        payload = {name: value for name, value in payload.items() if value is not None}
        token = jwt.encode(payload, node.keys.hs256, algorithm="HS256")
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")
        assert answer.headers["WWW-Authenticate"]

    @pytest.mark.parametrize("spelling", ["upper", "newline"])
    async def test_tenant_claim_must_be_canonical(self, node: RunningNode, spelling: str) -> None:
        """A tenant_id claim that is the tenant's UUID in another spelling is a 401."""
        tenant = node.create_tenant()
        tid = tenant.tenant_id.upper() if spelling == "upper" else tenant.tenant_id + "\n"
        token = jwt.encode(claims(tid), node.keys.hs256, algorithm="HS256")
        answer = await call(
            node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), bearer(token)
        )
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param("Basic dXNlcjpwYXNz", id="basic"),
            pytest.param("Token {token}", id="token-scheme"),
            pytest.param("{token}", id="no-scheme"),
            pytest.param("Bearer", id="bearer-alone"),
            pytest.param("Bearer    ", id="bearer-blank"),
            pytest.param("Bearer not.a.jwt", id="not-a-jwt"),
        ],
    )
    async def test_malformed_authorization(self, node: RunningNode, authorization: str) -> None:
        """An Authorization header that is not 'Bearer <valid JWT>' is a 401 with a challenge."""
        tenant = node.create_tenant()
        headers = {"Authorization": authorization.format(token=node.token(tenant.tenant_id))}
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), headers)
        assert (answer.status, problem_type(answer)) == (401, "invalid-token")
        assert answer.headers["WWW-Authenticate"]

    async def test_token_with_undecodable_bytes(self, node: RunningNode) -> None:
        """A bearer token carrying bytes that are not UTF-8 is a 401, not a 500."""
        tenant = node.create_tenant()
        path = f"/v1/tenants/{tenant.tenant_id}/ratings"
        token = node.token(tenant.tenant_id).encode()
        assert await raw_request(node, path, b"Authorization: Bearer " + token + b"\xff") == 401
        assert await raw_request(node, path, b"Authorization: Bearer \xff\xfe.e30.x") == 401

    async def test_two_credentials_are_ambiguous(self, node: RunningNode) -> None:
        """Sending both an API key and a bearer token, even valid ones, is a 400."""
        tenant = node.create_tenant()
        headers = {**tenant.headers, **bearer(node.token(tenant.tenant_id))}
        answer = await call(node, "GET", node.tenant_url(tenant.tenant_id, "/ratings"), headers)
        assert (answer.status, problem_type(answer)) == (400, "ambiguous-credentials")

    async def test_a_repeated_credential_header_is_ambiguous(self, node: RunningNode) -> None:
        """Two X-API-Key headers (or two Authorization headers) are a 400, not first-one-wins."""
        tenant = node.create_tenant()
        other = node.create_tenant("other")
        path = node.tenant_url(tenant.tenant_id, "/ratings")
        keys = [("X-API-Key", tenant.api_key), ("X-API-Key", other.api_key)]
        async with node.session.get(path, headers=keys) as response:
            assert response.status == 400
            assert (await response.json())["type"].endswith(":ambiguous-credentials")
        token = node.token(tenant.tenant_id)
        tokens = [("Authorization", f"Bearer {token}")] * 2
        async with node.session.get(path, headers=tokens) as response:
            assert response.status == 400

    async def test_token_for_a_tenant_this_node_does_not_serve(self, node: RunningNode) -> None:
        """A validly signed token for a tenant unknown here is a 403, on its own path or another."""
        tenant = node.create_tenant()
        stranger = "7b0c2a4e-9d1f-4e8a-b6c3-5f2d1e0a9b87"
        headers = bearer(node.token(stranger))
        for tid in (stranger, tenant.tenant_id):
            answer = await call(node, "GET", node.tenant_url(tid, "/ratings"), headers)
            assert (answer.status, problem_type(answer)) == (403, "unknown-tenant")


class TestTenantStatus:
    @pytest.mark.parametrize(
        ("status", "refusal"),
        [("suspended", (403, "tenant-suspended")), ("canceled", (402, "payment-required"))],
    )
    async def test_refused_tenant_and_back(
        self, node: RunningNode, status: str, refusal: tuple[int, str]
    ) -> None:
        """A suspended tenant is 403 tenant-suspended and a canceled one 402 payment-required,
        for key and token alike, and either is served again as soon as it is active."""
        tenant = node.create_tenant()
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        credentials = [tenant.headers, bearer(node.token(tenant.tenant_id))]
        node.storage.registry.set_status(tenant.tenant_id, status)  # type: ignore[arg-type]
        for headers in credentials:
            answer = await call(node, "GET", url, headers)
            assert (answer.status, problem_type(answer)) == refusal
        node.storage.registry.set_status(tenant.tenant_id, "active")
        for headers in credentials:
            assert (await call(node, "GET", url, headers)).status == 200

    async def test_suspending_one_tenant_spares_another(self, node: RunningNode) -> None:
        """Suspension is per tenant."""
        suspended, other = node.create_tenant("a"), node.create_tenant("b")
        node.storage.registry.set_status(suspended.tenant_id, "suspended")
        answer = await call(
            node, "GET", node.tenant_url(other.tenant_id, "/ratings"), other.headers
        )
        assert answer.status == 200


def rate_headers(answer: Answer) -> tuple[int, int, int]:
    """The minute policy's limit (RateLimit-Policy q), remaining (r) and reset (t)."""
    minute = ratelimit_fields(answer.headers)["minute"]
    policy = ratelimit_fields(answer.headers, "RateLimit-Policy")["minute"]
    return int(policy["q"]), int(minute["r"]), int(minute["t"])


class TestRateLimit:
    async def test_limit_then_429(self, node: RunningNode) -> None:
        """A tenant limited to 5 a minute gets 5 answers, then a 429 with Retry-After."""
        tenant = node.create_tenant(rate_limit=5)
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        answers = [await call(node, "GET", url, tenant.headers) for _ in range(6)]
        assert [a.status for a in answers] == [200] * 5 + [429]
        assert [rate_headers(a)[:2] for a in answers[:5]] == [
            (5, 4),
            (5, 3),
            (5, 2),
            (5, 1),
            (5, 0),
        ]
        refused = answers[5]
        assert problem_type(refused) == "rate-limited"
        limit, remaining, reset = rate_headers(refused)
        retry_after = int(refused.headers["Retry-After"])
        assert (limit, remaining) == (5, 0)
        assert 1 <= retry_after <= 12, "one token comes back every 12 s at 5 a minute"
        assert retry_after <= reset <= 60

    async def test_waiting_retry_after_is_enough(self, node: RunningNode) -> None:
        """After waiting the Retry-After a refused client is served again."""
        tenant = node.create_tenant(rate_limit=60)
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        for _ in range(60):
            assert (await call(node, "GET", url, tenant.headers)).status == 200
        refused = await call(node, "GET", url, tenant.headers)
        assert refused.status == 429
        await asyncio.sleep(int(refused.headers["Retry-After"]))
        assert (await call(node, "GET", url, tenant.headers)).status == 200

    async def test_other_tenants_are_unaffected(self, node: RunningNode) -> None:
        """One tenant using up its bucket does not limit another tenant."""
        busy, other = node.create_tenant("busy", rate_limit=5), node.create_tenant("other")
        for _ in range(6):
            await call(node, "GET", node.tenant_url(busy.tenant_id, "/ratings"), busy.headers)
        answer = await call(
            node, "GET", node.tenant_url(other.tenant_id, "/ratings"), other.headers
        )
        assert answer.status == 200
        assert rate_headers(answer)[0] == 1000, "the configured default limit"

    async def test_bucket_is_shared_by_every_credential_of_a_tenant(
        self, node: RunningNode
    ) -> None:
        """Requests with keys and tokens of one tenant draw on the same bucket."""
        tenant = node.create_tenant(rate_limit=5)
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        credentials = [
            tenant.headers,
            role_key(node, tenant, "reader"),
            bearer(node.token(tenant.tenant_id, "reader", algorithm="ES256")),
            bearer(node.token(tenant.tenant_id, "admin", algorithm="EdDSA")),
            bearer(node.token(tenant.tenant_id, "writer")),
        ]
        for headers in credentials:
            assert (await call(node, "GET", url, headers)).status == 200
        for headers in credentials:
            assert (await call(node, "GET", url, headers)).status == 429

    async def test_every_admitted_answer_carries_rate_headers(self, node: RunningNode) -> None:
        """Successes on every tenant route, and role refusals, carry RateLimit-* headers."""
        tenant = node.create_tenant(rate_limit=50)
        tid = tenant.tenant_id
        created = await call(
            node,
            "POST",
            node.tenant_url(tid, "/ratings"),
            tenant.headers,
            {"user_id": "u", "item_id": "i", "score": 3},
        )
        answers = [
            created,
            await call(node, "GET", node.tenant_url(tid, "/ratings"), tenant.headers),
            await call(node, "GET", node.tenant_url(tid, "/items/i/score"), tenant.headers),
            await call(
                node,
                "DELETE",
                node.tenant_url(tid, f"/ratings/{created.body['id']}"),
                tenant.headers,
            ),
            await call(node, "DELETE", node.tenant_url(tid, "/users/u"), tenant.headers),
            await call(
                node, "DELETE", node.tenant_url(tid, "/users/u"), role_key(node, tenant, "reader")
            ),
        ]
        assert [a.status for a in answers] == [201, 200, 200, 204, 200, 403]
        remaining = [rate_headers(a)[1] for a in answers]
        assert [rate_headers(a)[0] for a in answers] == [50] * 6
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[-1] < remaining[0]
