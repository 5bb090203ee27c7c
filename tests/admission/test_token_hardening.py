"""Bearer tokens beyond the basics: clock-skew leeway on exp and nbf, kid pinning, and key
files that would open an algorithm confusion refused at start-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from edge_node.admission.tokens import load_keys
from edge_node.config import JwtConfig, JwtKeyConfig
from edge_node.errors import ConfigError
from tests.conftest import NodeFactory
from tests.support import HS256_SECRET, RunningNode, SigningKeys

PROBLEM = "urn:edge-node:problem:"


async def status_of(node: RunningNode, tenant_id: str, token: str) -> tuple[int, str]:
    url = node.tenant_url(tenant_id, "/ratings")
    async with node.session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.json(content_type=None)
        return response.status, "" if response.status == 200 else body["type"]


def hs256(tenant_id: str, *, kid: str | None = None, **claims: Any) -> str:
    payload = {"tenant_id": tenant_id, "role": "reader", "exp": int(time.time()) + 300, **claims}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, HS256_SECRET, algorithm="HS256", headers=headers)


class TestLeeway:
    @pytest.mark.parametrize(("leeway", "expected"), [(0, 401), (30, 200)])
    async def test_exp_a_little_past_is_within_the_leeway(
        self, make_node: NodeFactory, leeway: int, expected: int
    ) -> None:
        """A token expired 10 s ago is refused with no leeway and accepted with 30 s."""
        node = await make_node(**{"auth.jwt.leeway_seconds": leeway})
        tenant = node.create_tenant()
        token = hs256(tenant.tenant_id, exp=int(time.time()) - 10)
        status, problem = await status_of(node, tenant.tenant_id, token)
        assert status == expected
        if expected == 401:
            assert problem == PROBLEM + "expired-token"

    @pytest.mark.parametrize(("leeway", "expected"), [(0, 401), (30, 200)])
    async def test_nbf_a_little_ahead_is_within_the_leeway(
        self, make_node: NodeFactory, leeway: int, expected: int
    ) -> None:
        """A token not valid for another 10 s is refused with no leeway, accepted with 30 s."""
        node = await make_node(**{"auth.jwt.leeway_seconds": leeway})
        tenant = node.create_tenant()
        status, _ = await status_of(
            node, tenant.tenant_id, hs256(tenant.tenant_id, nbf=int(time.time()) + 10)
        )
        assert status == expected

    async def test_leeway_never_stretches_to_a_stale_token(self, make_node: NodeFactory) -> None:
        """With the largest leeway (300 s), a token expired 10 minutes ago is refused."""
        node = await make_node(**{"auth.jwt.leeway_seconds": 300})
        tenant = node.create_tenant()
        token = hs256(tenant.tenant_id, exp=int(time.time()) - 600)
        assert await status_of(node, tenant.tenant_id, token) == (401, PROBLEM + "expired-token")


class TestKidPinning:
    @pytest.fixture
    async def pinned(self, make_node: NodeFactory, signing_keys: SigningKeys) -> RunningNode:
        """A node whose HS256 key has kid "hs" and whose RS256 key has kid "rs"."""
        files = {entry["algorithm"]: entry["file"] for entry in signing_keys.files}
        return await make_node(
            **{
                "auth.jwt.keys": [
                    {"algorithm": "HS256", "file": files["HS256"], "kid": "hs"},
                    {"algorithm": "RS256", "file": files["RS256"], "kid": "rs"},
                ]
            }
        )

    @pytest.mark.parametrize(("kid", "expected"), [("hs", 200), (None, 200), ("rs", 401)])
    async def test_a_kid_selects_only_its_own_key(
        self, pinned: RunningNode, kid: str | None, expected: int
    ) -> None:
        """An HS256 token naming the HS256 key's kid (or none) verifies; one naming the RS256
        key's kid finds no HS256 key and is refused."""
        tenant = pinned.create_tenant()
        status, _ = await status_of(pinned, tenant.tenant_id, hs256(tenant.tenant_id, kid=kid))
        assert status == expected


class TestConfusingKeyFiles:
    def test_a_public_key_configured_as_an_hmac_secret_is_refused(
        self, tmp_path: Path, signing_keys: SigningKeys
    ) -> None:
        """An RSA public key PEM configured for HS256 (which would let anyone holding the
        public key sign tokens) is a ConfigError at start-up."""
        pem = tmp_path / "rs256.pem"
        pem.write_bytes(
            signing_keys.rs256.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        config = JwtConfig(keys=(JwtKeyConfig(algorithm="HS256", file=str(pem)),))
        with pytest.raises(ConfigError, match="not an HS256 secret"):
            load_keys(config)

    def test_a_secret_configured_as_a_public_key_is_refused(self, tmp_path: Path) -> None:
        """An HMAC secret configured for RS256 is a ConfigError, not a key that never works."""
        secret = tmp_path / "hs.secret"
        secret.write_bytes(HS256_SECRET)
        config = JwtConfig(keys=(JwtKeyConfig(algorithm="RS256", file=str(secret)),))
        with pytest.raises(ConfigError, match="not a PEM public key"):
            load_keys(config)
