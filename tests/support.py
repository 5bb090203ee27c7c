"""Test support: a real edge node on loopback with real SQLite files, and JWT key material."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import http_sf
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edge_node.cli.daemon import queue_directory
from edge_node.config import Config, load_config
from edge_node.http.app import NodeStorage, create_app
from edge_node.metrics.node import NodeMetrics
from edge_node.usage.meter import Meter, open_meter
from edge_node.web.limits import LimitedAppRunner
from sync.billing.usage_view import LocalUsage


def ratelimit_fields(
    headers: Mapping[str, str], name: str = "RateLimit"
) -> dict[str, dict[str, Any]]:
    """A RateLimit or RateLimit-Policy field parsed as the Structured Field List it must be
    (http_sf raises on anything else): each policy's name to its parameters."""
    parsed = http_sf.parse(headers[name].encode(), tltype="list")
    return {str(policy): dict(params) for policy, params in parsed}


HS256_SECRET = b"edge-node-test-secret-0123456789abcdef"


@dataclass
class SigningKeys:
    """Private halves of every key the test node trusts, one per pinned algorithm."""

    hs256: bytes
    rs256: rsa.RSAPrivateKey
    es256: ec.EllipticCurvePrivateKey
    eddsa: ed25519.Ed25519PrivateKey
    files: list[dict[str, str]] = field(default_factory=list)

    def private_key(self, algorithm: str) -> Any:
        return {"HS256": self.hs256, "RS256": self.rs256, "ES256": self.es256, "EdDSA": self.eddsa}[
            algorithm
        ]


def make_signing_keys(directory: Path) -> SigningKeys:
    """Generate keys and write the verification halves where the node's config points."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = SigningKeys(
        hs256=HS256_SECRET,
        rs256=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        es256=ec.generate_private_key(ec.SECP256R1()),
        eddsa=ed25519.Ed25519PrivateKey.generate(),
    )
    (directory / "hs256.secret").write_bytes(HS256_SECRET + b"\n")
    keys.files.append({"algorithm": "HS256", "file": str(directory / "hs256.secret")})
    for algorithm, private in (("RS256", keys.rs256), ("ES256", keys.es256), ("EdDSA", keys.eddsa)):
        path = directory / f"{algorithm.lower()}.pem"
        path.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        keys.files.append({"algorithm": algorithm, "file": str(path)})
    return keys


def make_token(
    keys: SigningKeys,
    tenant_id: str,
    role: str = "admin",
    *,
    algorithm: str = "HS256",
    sub: str | None = None,
    ttl: float = 300,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {
        "tenant_id": tenant_id,
        "role": role,
        "exp": int(time.time() + ttl),
        **claims,
    }
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, keys.private_key(algorithm), algorithm=algorithm)


@dataclass
class Tenant:
    tenant_id: str
    api_key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@dataclass
class RunningNode:
    """An edge node serving real HTTP on 127.0.0.1 from SQLite files in a temporary directory."""

    config: Config
    storage: NodeStorage
    meter: Meter
    url: str
    session: aiohttp.ClientSession
    keys: SigningKeys

    def create_tenant(
        self, name: str = "acme", *, plan: str = "payg", rate_limit: int | None = None
    ) -> Tenant:
        tenant, key = self.storage.registry.create_tenant(
            name, plan=plan, rate_limit_per_minute=rate_limit
        )  # type: ignore[arg-type]
        return Tenant(tenant.tenant_id, key.api_key, key.key_id)

    def tenant_url(self, tenant_id: str, path: str = "") -> str:
        return f"{self.url}/v1/tenants/{tenant_id}{path}"

    def token(self, tenant_id: str, role: str = "admin", **kwargs: Any) -> str:
        return make_token(self.keys, tenant_id, role, **kwargs)


def node_config(data_dir: Path, keys: SigningKeys, **overrides: Any) -> Config:
    return load_config(
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "node_id": "test-node",
            "server.port": 0,
            "auth.jwt.keys": keys.files,
            **overrides,
        },
    )


async def start_node(
    config: Config,
    keys: SigningKeys,
    *,
    fsync: Callable[[int], None] = os.fsync,
    metrics: NodeMetrics | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[RunningNode, web.AppRunner]:
    """A node serving on loopback; its usage API reads billing's records as of `clock`."""
    storage = NodeStorage.open(config)
    meter = await open_meter(
        config.meter, config.queue, queue_directory(config), config.node_id, fsync=fsync
    )
    runner = LimitedAppRunner(
        create_app(
            config, storage, meter, metrics=metrics, usage=LocalUsage(config.data_path, clock)
        ),
        config.limits,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    session = aiohttp.ClientSession()
    return RunningNode(config, storage, meter, f"http://{host}:{port}", session, keys), runner
