"""Tests of the record frame: encoding, checking, and walking a segment's bytes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.queue.framing import HEADER_SIZE, decode_frame, encode_frame
from edge_node.queue.scanning import Damage, scan_segment

U32 = st.integers(min_value=0, max_value=2**32 - 1)
U64 = st.integers(min_value=0, max_value=2**64 - 1)


class TestFrameRoundTrip:
    @settings(deadline=None)
    @given(payload=st.binary(max_size=2048), seq=U64, batch_index=U32, timestamp_ms=U64)
    def test_decoding_an_encoded_frame_gives_back_every_field(
        self, payload: bytes, seq: int, batch_index: int, timestamp_ms: int
    ) -> None:
        """Any payload, sequence number, batch index and timestamp survive encode then decode."""
        frame = decode_frame(encode_frame(payload, seq, batch_index, timestamp_ms), 0, 0)
        assert frame is not None
        assert (frame.payload, frame.seq, frame.batch_index, frame.timestamp_ms) == (
            payload,
            seq,
            batch_index,
            timestamp_ms,
        )
        assert frame.size == HEADER_SIZE + len(payload)

    @settings(deadline=None)
    @given(payload=st.binary(min_size=1, max_size=64), seq=U64, data=st.data())
    def test_any_single_flipped_byte_after_the_magic_is_detected(
        self, payload: bytes, seq: int, data: st.DataObject
    ) -> None:
        """The checksum covers length, batch index, sequence number, timestamp and payload."""
        encoded = bytearray(encode_frame(payload, seq, 3, 1_700_000_000_000))
        at = data.draw(st.integers(min_value=4, max_value=len(encoded) - 1))
        encoded[at] ^= data.draw(st.integers(min_value=1, max_value=255))
        assert decode_frame(bytes(encoded), 0, 0) is None

    def test_a_frame_cut_short_is_not_decoded(self) -> None:
        """A frame missing its last byte is incomplete, never a shorter record."""
        encoded = encode_frame(b"payload", 7)
        assert decode_frame(encoded[:-1], 0, 0) is None


class TestSegmentScan:
    def test_scan_resumes_at_the_next_good_frame_after_damage(self, tmp_path: Path) -> None:
        """Garbage between frames is reported once and the frames after it are still found."""
        first, second = encode_frame(b"one", 1), encode_frame(b"two", 2)
        path = tmp_path / "segment"
        path.write_bytes(first + b"\x00garbage\xfe" + second)
        items = list(scan_segment(path, 0, 0))
        assert [type(item) for item in items] == [type(items[0]), Damage, type(items[0])]
        assert items[1] == Damage(len(first), len(first) + 9)
        assert [getattr(item, "payload", None) for item in items] == [b"one", None, b"two"]

    def test_scan_treats_a_repeated_sequence_number_as_damage(self, tmp_path: Path) -> None:
        """A good frame that does not advance the sequence cannot be a real next record."""
        path = tmp_path / "segment"
        path.write_bytes(encode_frame(b"a", 1) + encode_frame(b"b", 1) + encode_frame(b"c", 2))
        items = list(scan_segment(path, 0, 0))
        assert isinstance(items[1], Damage)
        assert [getattr(item, "seq", None) for item in items] == [1, None, 2]

    def test_scan_stops_at_the_limit(self, tmp_path: Path) -> None:
        """Bytes at or past the limit (not yet durable) are never read."""
        first = encode_frame(b"one", 1)
        path = tmp_path / "segment"
        path.write_bytes(first + encode_frame(b"two", 2))
        items = list(scan_segment(path, 0, 0, limit=len(first)))
        assert [getattr(item, "seq", None) for item in items] == [1]
