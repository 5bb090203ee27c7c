"""Bearer-token (JWT) verification, one pinned algorithm per key, with a cache of verified tokens.

A token is only ever checked against keys configured for the algorithm its header names,
and a key verifies only its own algorithm: `none`, and HS256 signed with an RSA public
key, find no key at all. Verified claims are cached until the token expires, because
signature checks cost as much as the rest of a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge_node.config import JwtConfig, JwtKeyConfig
from edge_node.errors import ConfigError, Unauthorized
from edge_node.ids import is_uuid
from edge_node.tenants.model import ROLES, Role

MIN_HMAC_SECRET_BYTES = 32
_PUBLIC_KEY_TYPES: dict[str, type[Any]] = {
    "RS256": rsa.RSAPublicKey,
    "ES256": ec.EllipticCurvePublicKey,
    "EdDSA": ed25519.Ed25519PublicKey,
}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    tenant_id: str
    role: Role
    subject: str | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class VerificationKey:
    algorithm: str
    kid: str
    key: Any


def load_keys(config: JwtConfig) -> tuple[VerificationKey, ...]:
    """Read every configured key file, checking each key suits its pinned algorithm."""
    return tuple(_load_key(i, key) for i, key in enumerate(config.keys))


def _load_key(index: int, config: JwtKeyConfig) -> VerificationKey:
    where = f"auth.jwt.keys[{index}].file"
    if not config.file:
        raise ConfigError(f"{where} must name the key file")
    try:
        material = Path(config.file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {config.file}: {exc.strerror}") from None
    if config.algorithm == "HS256":
        secret = material.rstrip(b"\r\n")
        if secret.lstrip().startswith((b"-----BEGIN", b"ssh-", b"ecdsa-")):
            # A public key as HMAC secret: anyone holding the public key could sign tokens.
            raise ConfigError(
                f"{where}: {config.file} holds a public or private key, not an HS256 secret;"
                " configure a key file under its own algorithm (RS256, ES256, EdDSA)"
            )
        if len(secret) < MIN_HMAC_SECRET_BYTES:
            raise ConfigError(
                f"{where}: an HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes,"
                f" got {len(secret)}"
            )
        return VerificationKey("HS256", config.kid, secret)
    try:
        public_key = load_pem_public_key(material)
    except ValueError:
        raise ConfigError(f"{where}: {config.file} is not a PEM public key") from None
    if not isinstance(public_key, _PUBLIC_KEY_TYPES[config.algorithm]):
        raise ConfigError(
            f"{where}: {config.file} holds a {type(public_key).__name__}, which cannot verify"
            f" {config.algorithm}"
        )
    return VerificationKey(config.algorithm, config.kid, public_key)


class TokenVerifier:
    """Turns a bearer token into verified claims, or raises Unauthorized."""

    def __init__(
        self,
        keys: tuple[VerificationKey, ...],
        config: JwtConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._config = config
        self._clock = clock
        self._cache: dict[str, TokenClaims] = {}

    def verify(self, token: str) -> TokenClaims:
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached.expires_at + self._config.leeway_seconds:
                return cached
            del self._cache[token]
        claims = self._verify_signature(token)
        self._remember(token, claims, now)
        return claims

    def _verify_signature(self, token: str) -> TokenClaims:
        try:
            if not token.isascii():  # a JWS is base64url and dots; PyJWT cannot encode the rest
                raise jwt.DecodeError("not ASCII")
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is malformed", slug="invalid-token") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        candidates = [
            key
            for key in self._keys
            if key.algorithm == algorithm and (not key.kid or kid is None or key.kid == kid)
        ]
        if not candidates:
            raise Unauthorized(
                f"no key on this node verifies {str(algorithm)[:20]!r} tokens",
                slug="invalid-token",
            )
        failure: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                payload = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self._config.audience or None,
                    issuer=self._config.issuer or None,
                    leeway=self._config.leeway_seconds,
                    options={"require": ["exp", "tenant_id", "role"]},
                )
            except jwt.ExpiredSignatureError:
                raise Unauthorized("the bearer token has expired", slug="expired-token") from None
            except jwt.PyJWTError as exc:
                failure = exc
                continue
            return _claims(payload)
        raise Unauthorized(f"the bearer token is not valid: {failure}", slug="invalid-token")

    def _remember(self, token: str, claims: TokenClaims, now: float) -> None:
        if self._config.cache_size == 0:
            return
        if len(self._cache) >= self._config.cache_size:
            leeway = self._config.leeway_seconds
            self._cache = {t: c for t, c in self._cache.items() if now < c.expires_at + leeway}
            while len(self._cache) >= self._config.cache_size:
                del self._cache[next(iter(self._cache))]
        self._cache[token] = claims


def _claims(payload: dict[str, Any]) -> TokenClaims:
    tenant_id, role, subject = payload["tenant_id"], payload["role"], payload.get("sub")
    if not isinstance(tenant_id, str) or not is_uuid(tenant_id):
        raise Unauthorized("the token's tenant_id claim is not a UUID", slug="invalid-token")
    if role not in ROLES:
        raise Unauthorized(
            f"the token's role claim must be one of {', '.join(ROLES)}", slug="invalid-token"
        )
    if subject is not None and not isinstance(subject, str):
        raise Unauthorized("the token's sub claim must be a string", slug="invalid-token")
    return TokenClaims(tenant_id, role, subject, float(payload["exp"]))
