"""The API key format: what counts as a checksummed key, a legacy key, or a malformed one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge_node.tenants.apikeys import checksum, key_id_of, key_shape, new_api_key

KEY_ID = "0123456789abcdef"
LEGACY = f"enk_{KEY_ID}_" + "x-_Y" * 10 + "abc"
CHECKSUMMED = f"enk_{KEY_ID}_" + "A" * 40 + "4HH1NM"


class TestChecksum:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", "000000"),  # CRC-32 0
            ("edge-node", "0rUv8s"),  # CRC-32 790515306
            (CHECKSUMMED[:-6], "4HH1NM"),  # CRC-32 3919785908, above 2**31
        ],
    )
    def test_is_the_crc32_in_six_base62_digits(self, text: str, expected: str) -> None:
        """The checksum is the CRC-32 of the text, most significant base62 digit first."""
        assert checksum(text) == expected


class TestKeyShape:
    def test_a_new_key_is_checksummed_and_gives_its_id(self) -> None:
        """A freshly issued key has the checksummed shape and its key id reads back."""
        api_key = new_api_key(KEY_ID)
        assert key_shape(api_key) == "checksummed"
        assert key_id_of(api_key) == KEY_ID

    def test_a_legacy_key_gives_its_id(self) -> None:
        """A key of 43 base64url characters after the id is legacy and its id reads back."""
        assert key_shape(LEGACY) == "legacy"
        assert key_id_of(LEGACY) == KEY_ID

    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda key: key.replace(KEY_ID, KEY_ID.upper()), id="upper-hex-id"),
            pytest.param(lambda key: key.replace("3", "\u0663", 1), id="non-ascii-digit-in-id"),
            pytest.param(lambda key: key + "\n", id="trailing-newline"),
            pytest.param(lambda key: key[:25] + "-" + key[26:], id="dash-in-checksummed-tail"),
            pytest.param(lambda key: key[:-6] + key[-5:] + key[-6], id="checksum-rotated"),
            pytest.param(lambda key: key[:20] + "-" + key[21:], id="no-separator"),
            pytest.param(lambda key: key[:-1], id="one-short"),
        ],
    )
    def test_anything_else_is_malformed(self, make: Callable[[str], str]) -> None:
        """A key off the format by one character, or with a wrong checksum, is malformed and
        has no key id."""
        assert key_shape(CHECKSUMMED) == "checksummed"
        api_key = make(CHECKSUMMED)
        assert key_shape(api_key) == "malformed"
        assert key_id_of(api_key) is None

    def test_a_legacy_key_of_the_wrong_length_is_malformed(self) -> None:
        """A legacy tail must be exactly 43 characters."""
        assert key_shape(LEGACY + "a") == "malformed"
        assert key_shape(LEGACY[:-1]) == "malformed"
