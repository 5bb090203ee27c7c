"""Sealed comments: the AES-256-GCM format a rating comment is stored in, at rest and centrally.

A sealed comment is

    byte 0        format version (1)
    bytes 1-8     id of the tenant data key that sealed it (8 random bytes, hex in key stores)
    bytes 9-20    nonce: 96 random bits, fresh for every seal
    bytes 21-     AES-256-GCM ciphertext of the UTF-8 comment, then its 16-byte tag

The associated data binds the ciphertext to its row: the header (format and key id), the
tenant id and the rating id. A sealed comment copied into another row, or another tenant's
file or central rows, fails authentication and reads as unreadable, never as another row's
text. Random 96-bit nonces are safe for 2**32 seals per data key (NIST SP 800-38D); a key id
in the header lets a tenant hold several data keys (one per node that created one, or new
ones after a rotation) while every old comment still names the key that opens it.

This module does no I/O: data keys come from `edge_node.crypto.keystore`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.errors import CommentUnreadable

FORMAT_VERSION = 1
KEY_ID_BYTES = 8
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
_HEADER_BYTES = 1 + KEY_ID_BYTES
_BODY_START = _HEADER_BYTES + NONCE_BYTES
OVERHEAD_BYTES = _HEADER_BYTES + NONCE_BYTES + 16
OPENED_MEMORY = 16384  # comments remembered opened, per sealer memory (a few MiB at most)


def new_data_key() -> tuple[str, bytes]:
    """A fresh data key and its id (16 hex digits)."""
    return secrets.token_hex(KEY_ID_BYTES), AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)


def sealed_key_id(sealed: bytes) -> str:
    """The id of the data key a sealed comment names; CommentUnreadable if it is no seal."""
    if len(sealed) < OVERHEAD_BYTES or sealed[0] != FORMAT_VERSION:
        raise CommentUnreadable("not a sealed comment of a known format")
    return sealed[1:_HEADER_BYTES].hex()


def _no_refresh() -> None:
    return None


def _no_generation() -> int:
    return 0


class TenantSealer:
    """Seals and opens one tenant's comments.

    `current` gives the key new comments are sealed with, as (key id, AESGCM); `lookup`
    finds the key a sealed comment names (None when this node does not hold it); `refresh`,
    called once before each store operation, drops keys another process destroyed, and
    `generation` counts how often keys and opened comments were dropped (a page of opened
    comments kept in memory is good for one generation only). `ciphers`
    (header -> key) is the sealer's memory of keys found, and `opened` the memory of comments
    opened, keyed by (tenant, rating id, sealed bytes); their owner clears both when keys are
    destroyed, and may share `opened` between tenants (the key names the tenant).

    A page of ratings opens one comment per row: `open` costs one dictionary lookup for a
    comment opened before, else one AES-GCM call (about 1 us, most of a 50-row page's cost).
    Only the process's memory ever holds an opened comment, never a file.
    """

    __slots__ = (
        "_aad_tenant",
        "_ciphers",
        "_current",
        "_lookup",
        "_opened",
        "generation",
        "refresh",
        "tenant_id",
    )

    def __init__(
        self,
        tenant_id: str,
        current: Callable[[], tuple[str, AESGCM]],
        lookup: Callable[[str], AESGCM | None],
        *,
        refresh: Callable[[], None] = _no_refresh,
        generation: Callable[[], int] = _no_generation,
        ciphers: dict[bytes, AESGCM] | None = None,
        opened: dict[tuple[str, str, bytes], str] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self._aad_tenant = tenant_id.encode() + b"\x00"
        self._current = current
        self._lookup = lookup
        self.refresh = refresh
        self.generation = generation
        self._ciphers: dict[bytes, AESGCM] = {} if ciphers is None else ciphers
        self._opened: dict[tuple[str, str, bytes], str] = {} if opened is None else opened

    def seal(self, rating_id: str, comment: str | None) -> bytes | None:
        if comment is None:
            return None
        key_id, cipher = self._current()
        header = bytes((FORMAT_VERSION,)) + bytes.fromhex(key_id)
        nonce = os.urandom(NONCE_BYTES)
        aad = header + self._aad_tenant + rating_id.encode()
        return header + nonce + cipher.encrypt(nonce, comment.encode(), aad)

    def open(self, rating_id: str, sealed: bytes | None) -> str | None:
        """The comment sealed in `sealed`; CommentUnreadable when it cannot be opened here."""
        if sealed is None:
            return None
        memo = (self.tenant_id, rating_id, sealed)
        text = self._opened.get(memo)
        if text is not None:
            return text
        header = sealed[:_HEADER_BYTES]
        cipher = self._ciphers.get(header)
        if cipher is None or len(sealed) < OVERHEAD_BYTES:
            cipher = self._find(header, sealed)
        try:
            plain = cipher.decrypt(
                sealed[_HEADER_BYTES:_BODY_START],
                sealed[_BODY_START:],
                header + self._aad_tenant + rating_id.encode(),
            )
        except InvalidTag:
            raise CommentUnreadable(
                "the comment does not authenticate for this row (moved or altered)"
            ) from None
        if len(self._opened) >= OPENED_MEMORY:
            self._opened.clear()  # a bound, not an LRU: refilling costs one decryption each
        text = self._opened[memo] = plain.decode()
        return text

    def _find(self, header: bytes, sealed: bytes) -> AESGCM:
        cipher = self._lookup(sealed_key_id(sealed))
        if cipher is None:
            raise CommentUnreadable("the data key that sealed this comment is not on this node")
        self._ciphers[header] = cipher
        return cipher
