"""The API key format: a recognizable prefix, a key id, a random secret and a checksum.

    enk_<key id: 16 hex>_<secret: 40 base62><checksum: 6 base62>

The checksum is the CRC-32 of everything before it, in base62. A key whose checksum does not
match was mistyped or truncated: it is refused as malformed without touching the database,
and told apart from a well-formed key that is unknown or revoked. The secret's 40 base62
characters carry 238 random bits; the checksum adds no secrecy, only typo detection.

Keys issued before checksums existed (`enk_<key id>_<43 characters of base64url>`) carry no
checksum; they keep working unchanged and are looked up as before.
"""

from __future__ import annotations

import secrets
import zlib
from typing import Literal

KEY_PREFIX = "enk_"
KEY_ID_LENGTH = 16
SECRET_LENGTH = 40
CHECKSUM_LENGTH = 6
LEGACY_SECRET_LENGTH = 43  # secrets.token_urlsafe(32)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_SET = frozenset(_BASE62)
_HEX_SET = frozenset("0123456789abcdef")
_LEGACY_SET = frozenset(_BASE62 + "-_")
_HEAD = len(KEY_PREFIX) + KEY_ID_LENGTH + 1

KeyShape = Literal["checksummed", "legacy", "malformed"]


def checksum(text: str) -> str:
    """The CRC-32 of `text` as exactly six base62 digits."""
    value = zlib.crc32(text.encode())
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def new_api_key(key_id: str) -> str:
    """A fresh key for `key_id` (16 lowercase hex digits), checksum included."""
    body = f"{KEY_PREFIX}{key_id}_" + "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))
    return body + checksum(body)


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_LENGTH // 2)


def key_shape(api_key: str) -> KeyShape:
    """Which format `api_key` is in; `malformed` for a mistyped key or anything else."""
    if (
        not api_key.startswith(KEY_PREFIX)
        or len(api_key) <= _HEAD
        or api_key[_HEAD - 1] != "_"
        or not _HEX_SET.issuperset(api_key[len(KEY_PREFIX) : _HEAD - 1])
    ):
        return "malformed"
    tail = api_key[_HEAD:]
    if len(tail) == SECRET_LENGTH + CHECKSUM_LENGTH and _BASE62_SET.issuperset(tail):
        body = api_key[:-CHECKSUM_LENGTH]
        return "checksummed" if checksum(body) == api_key[-CHECKSUM_LENGTH:] else "malformed"
    if len(tail) == LEGACY_SECRET_LENGTH and _LEGACY_SET.issuperset(tail):
        return "legacy"
    return "malformed"


def key_id_of(api_key: str) -> str | None:
    """The key id inside a well-formed key (either format), None for a malformed one."""
    if key_shape(api_key) == "malformed":
        return None
    return api_key[len(KEY_PREFIX) : _HEAD - 1]
