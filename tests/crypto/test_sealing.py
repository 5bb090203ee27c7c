"""Sealed comments: AES-256-GCM bound to tenant and rating, with a format byte and key id."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.crypto.sealing import (
    FORMAT_VERSION,
    NONCE_BYTES,
    OVERHEAD_BYTES,
    TenantSealer,
    new_data_key,
    sealed_key_id,
)
from edge_node.errors import CommentUnreadable

TENANT_A = str(uuid.uuid4())
TENANT_B = str(uuid.uuid4())
RATING_1 = str(uuid.uuid4())
RATING_2 = str(uuid.uuid4())


def sealer_for(tenant_id: str, keys: dict[str, bytes]) -> TenantSealer:
    """A sealer over `keys` (id -> key), sealing with the first of them."""
    first = next(iter(keys))
    ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
    return TenantSealer(tenant_id, lambda: (first, ciphers[first]), ciphers.get)


@pytest.fixture
def keys() -> dict[str, bytes]:
    key_id, key = new_data_key()
    return {key_id: key}


class TestFormat:
    def test_a_sealed_comment_opens_back_to_its_text(self, keys: dict[str, bytes]) -> None:
        """A comment sealed for a row opens to the same text for that row, emoji included."""
        sealer = sealer_for(TENANT_A, keys)
        sealed = sealer.seal(RATING_1, "très bien 👍")
        assert sealed is not None
        assert sealer.open(RATING_1, sealed) == "très bien 👍"
        assert sealer.seal(RATING_1, None) is None
        assert sealer.open(RATING_1, None) is None

    def test_the_header_names_format_and_key_and_nonces_never_repeat(
        self, keys: dict[str, bytes]
    ) -> None:
        """Byte 0 is the format version, bytes 1-8 the data key id, then a fresh random nonce:
        sealing the same text twice gives different bytes, and no plain text shows."""
        sealer = sealer_for(TENANT_A, keys)
        seals = [sealer.seal(RATING_1, "same words") for _ in range(50)]
        assert all(s is not None for s in seals)
        (key_id,) = keys
        for sealed in seals:
            assert sealed is not None
            assert sealed[0] == FORMAT_VERSION
            assert sealed_key_id(sealed) == key_id
            assert len(sealed) == len("same words") + OVERHEAD_BYTES
            assert b"same words" not in sealed
        nonces = {s[9 : 9 + NONCE_BYTES] for s in seals if s is not None}
        assert len(nonces) == len(seals)


class TestBinding:
    def test_a_comment_moved_to_another_rating_does_not_open(self, keys: dict[str, bytes]) -> None:
        """The rating id is associated data: the seal of rating 1 fails as rating 2's."""
        sealer = sealer_for(TENANT_A, keys)
        sealed = sealer.seal(RATING_1, "mine")
        with pytest.raises(CommentUnreadable, match="moved or altered"):
            sealer.open(RATING_2, sealed)

    def test_a_comment_moved_to_another_tenant_does_not_open_even_under_the_same_key(
        self, keys: dict[str, bytes]
    ) -> None:
        """The tenant id is associated data: even a tenant holding the very same key cannot
        open another tenant's seal for the same rating id."""
        sealed = sealer_for(TENANT_A, keys).seal(RATING_1, "mine")
        with pytest.raises(CommentUnreadable, match="moved or altered"):
            sealer_for(TENANT_B, keys).open(RATING_1, sealed)

    def test_any_altered_byte_is_detected(self, keys: dict[str, bytes]) -> None:
        """Flipping any bit of a seal after its header makes it unreadable, never other text."""
        sealer = sealer_for(TENANT_A, keys)
        sealed = sealer.seal(RATING_1, "intact")
        assert sealed is not None
        for index in range(9, len(sealed)):
            altered = bytearray(sealed)
            altered[index] ^= 0x01
            with pytest.raises(CommentUnreadable):
                sealer.open(RATING_1, bytes(altered))

    def test_an_unknown_key_or_format_is_unreadable(self, keys: dict[str, bytes]) -> None:
        """A seal naming a key this node lacks, a future format or a truncated seal is
        unreadable, with a reason."""
        sealed = sealer_for(TENANT_A, keys).seal(RATING_1, "text")
        assert sealed is not None
        other_id, other_key = new_data_key()
        stranger = sealer_for(TENANT_A, {other_id: other_key})
        with pytest.raises(CommentUnreadable, match="not on this node"):
            stranger.open(RATING_1, sealed)
        with pytest.raises(CommentUnreadable, match="known format"):
            sealer_for(TENANT_A, keys).open(RATING_1, bytes((2,)) + sealed[1:])
        with pytest.raises(CommentUnreadable, match="known format"):
            sealer_for(TENANT_A, keys).open(RATING_1, sealed[:20])
