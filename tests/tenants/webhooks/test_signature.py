"""Stripe's signature scheme: what verifies, what is forged, what is stale."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edge_node.tenants.webhook_signature import (
    SignatureError,
    StaleSignature,
    sign,
    signature_header,
    verify,
)

SECRET = "whsec_test_secret"
OTHER = "whsec_other_secret"
BODY = b'{"id":"evt_1","object":"event"}'
NOW = 1_760_000_000


class TestScheme:
    def test_v1_is_hmac_sha256_of_timestamp_dot_body(self) -> None:
        """A v1 signature is the hex HMAC-SHA256 of "<t>.<body>" keyed with the whole secret,
        as Stripe documents it."""
        expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256)
        assert sign(BODY, SECRET, NOW) == expected.hexdigest()

    def test_a_genuine_signature_verifies(self) -> None:
        """A header signed with the secret at the current time verifies with the current secret."""
        verified = verify(BODY, signature_header(BODY, [SECRET], NOW), [SECRET], now=NOW)
        assert (verified.timestamp, verified.secret_index) == (NOW, 0)

    def test_any_v1_may_match_and_other_schemes_are_ignored(self) -> None:
        """While Stripe rolls a secret it sends several v1 values; one match is enough, and a
        v0 (test-mode scheme) value is never taken for a v1."""
        good = sign(BODY, SECRET, NOW)
        header = f"t={NOW},v1={sign(BODY, OTHER, NOW)},v0={good},v1={good}"
        assert verify(BODY, header, [SECRET], now=NOW).secret_index == 0
        with pytest.raises(SignatureError):
            verify(BODY, f"t={NOW},v0={good}", [SECRET], now=NOW)

    def test_the_previous_secret_verifies_too(self) -> None:
        """Given (current, previous), a signature by the previous one verifies and says so."""
        header = signature_header(BODY, [OTHER], NOW)
        assert verify(BODY, header, [SECRET, OTHER], now=NOW).secret_index == 1


class TestRefusals:
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "garbage",
            f"t={NOW}",
            f"v1={sign(BODY, SECRET, NOW)}",
            f"t=abc,v1={sign(BODY, SECRET, NOW)}",
            f"t={NOW},v1={sign(BODY, SECRET, NOW).upper()}",
            f"t={NOW},v1={sign(BODY, SECRET, NOW)[:-1]}",
            f"t={NOW},v1=é{sign(BODY, SECRET, NOW)[1:]}",
        ],
    )
    def test_malformed_headers_are_refused(self, header: str | None) -> None:
        """A missing header, no timestamp, no v1, or a v1 that is not 64 lowercase hex digits
        is refused as a bad signature, never an exception of another kind."""
        with pytest.raises(SignatureError) as raised:
            verify(BODY, header, [SECRET], now=NOW)
        assert not isinstance(raised.value, StaleSignature)

    def test_a_signature_by_another_secret_is_forged(self) -> None:
        """A signature made with a secret we do not hold is refused."""
        with pytest.raises(SignatureError):
            verify(BODY, signature_header(BODY, [OTHER], NOW), [SECRET], now=NOW)

    def test_a_changed_body_is_forged(self) -> None:
        """The signature covers every byte of the body."""
        header = signature_header(BODY, [SECRET], NOW)
        with pytest.raises(SignatureError):
            verify(BODY + b" ", header, [SECRET], now=NOW)

    def test_a_changed_timestamp_is_forged(self) -> None:
        """The timestamp is signed: moving it forward to look fresh breaks the signature."""
        header = signature_header(BODY, [SECRET], NOW - 3600).replace(f"t={NOW - 3600}", f"t={NOW}")
        with pytest.raises(SignatureError) as raised:
            verify(BODY, header, [SECRET], now=NOW)
        assert not isinstance(raised.value, StaleSignature)

    @pytest.mark.parametrize("offset", [-301, 301])
    def test_outside_the_tolerance_is_stale(self, offset: int) -> None:
        """A genuine signature more than 300 s old, or from more than 300 s ahead, is stale."""
        header = signature_header(BODY, [SECRET], NOW + offset)
        with pytest.raises(StaleSignature):
            verify(BODY, header, [SECRET], now=NOW, tolerance=300)

    @pytest.mark.parametrize("offset", [-300, 300])
    def test_at_the_edge_of_the_tolerance_verifies(self, offset: int) -> None:
        """Exactly 300 s either way is still within the tolerance."""
        header = signature_header(BODY, [SECRET], NOW + offset)
        assert verify(BODY, header, [SECRET], now=NOW, tolerance=300).timestamp == NOW + offset

    def test_a_forgery_with_an_old_timestamp_reads_as_forged(self) -> None:
        """The signature is checked before the time: a forgery is never reported as stale."""
        with pytest.raises(SignatureError) as raised:
            verify(BODY, signature_header(BODY, [OTHER], NOW - 9999), [SECRET], now=NOW)
        assert not isinstance(raised.value, StaleSignature)
