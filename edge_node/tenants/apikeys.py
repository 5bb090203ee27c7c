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

import hashlib
import re
import secrets
import zlib
from typing import Literal

KEY_PREFIX = "enk_"
KEY_ID_LENGTH = 16
SECRET_LENGTH = 40
CHECKSUM_LENGTH = 6
LEGACY_SECRET_LENGTH = 43  # secrets.token_urlsafe(32)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEAD = len(KEY_PREFIX) + KEY_ID_LENGTH + 1
_CHECKSUMMED_LENGTH = _HEAD + SECRET_LENGTH + CHECKSUM_LENGTH
# Either format in one match (ASCII only: [0-9] is not every Unicode digit); the two tails
# differ in length, so a key is never both.
_KEY_FORMAT = re.compile(
    rf"{KEY_PREFIX}(?P<key_id>[0-9a-f]{{{KEY_ID_LENGTH}}})_"
    rf"(?:[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}}|[0-9A-Za-z_-]{{{LEGACY_SECRET_LENGTH}}})"
)

KeyShape = Literal["checksummed", "legacy", "malformed"]


def checksum(text: str) -> str:
    """The CRC-32 of `text` as exactly six base62 digits."""
    value = zlib.crc32(text.encode())  # below 2**32 < 62**6: six digits always suffice
    digits = _BASE62
    return (
        digits[value // 62**5 % 62]
        + digits[value // 62**4 % 62]
        + digits[value // 62**3 % 62]
        + digits[value // 62**2 % 62]
        + digits[value // 62 % 62]
        + digits[value % 62]
    )


def hash_key(api_key: str) -> str:
    """What node.sqlite keeps of a key: the SHA-256 of the whole key, in hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(key_id: str) -> str:
    """A fresh key for `key_id` (16 lowercase hex digits), checksum included."""
    body = f"{KEY_PREFIX}{key_id}_" + "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))
    return body + checksum(body)


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_LENGTH // 2)


def key_shape(api_key: str) -> KeyShape:
    """Which format `api_key` is in; `malformed` for a mistyped key or anything else."""
    if _KEY_FORMAT.fullmatch(api_key) is None:
        return "malformed"
    if len(api_key) != _CHECKSUMMED_LENGTH:
        return "legacy"
    body = api_key[:-CHECKSUM_LENGTH]
    return "checksummed" if checksum(body) == api_key[-CHECKSUM_LENGTH:] else "malformed"


def key_id_of(api_key: str) -> str | None:
    """The key id inside a well-formed key (either format), None for a malformed one."""
    if key_shape(api_key) == "malformed":
        return None
    return api_key[len(KEY_PREFIX) : _HEAD - 1]
