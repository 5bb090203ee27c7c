"""Tests of the owner's status snapshot and of what append accepts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_node.queue import QueueSettings, open_queue
from tests.queue.conftest import FRAME_BYTES, payload

FOUR_PER_SEGMENT = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)


class TestStatus:
    async def test_the_default_timestamp_is_the_wall_clock_at_append(self, queue_dir: Path) -> None:
        """Without timestamp_ms, the oldest unconsumed age comes from when append was called."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            before = time.time_ns() // 1_000_000
            await queue.append(payload(0))
            after = time.time_ns() // 1_000_000
            oldest = (await queue.status()).consumers["billing"].oldest_unconsumed_timestamp_ms
            assert oldest is not None
            assert before <= oldest <= after

    async def test_status_counts_bytes_segments_and_depth(self, queue_dir: Path) -> None:
        """Status reports the live bytes and segments, and each consumer's depth and age."""
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            for n in range(10):
                await queue.append(payload(n), timestamp_ms=1000 + n)
            await queue.commit("billing", 5)
            status = await queue.status()
        assert (status.first_seq, status.last_seq) == (5, 10)
        assert (status.bytes, status.segment_count) == (6 * FRAME_BYTES, 2)
        assert status.max_bytes == FOUR_PER_SEGMENT.max_bytes
        billing = status.consumers["billing"]
        assert (billing.cursor, billing.depth, billing.oldest_unconsumed_timestamp_ms) == (
            5,
            5,
            1005,
        )

    async def test_a_fully_consumed_queue_has_no_depth_and_no_age(self, queue_dir: Path) -> None:
        """When every record is committed, depth is 0 and there is no oldest timestamp."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.append(payload(0))
            await queue.commit("billing", 1)
            billing = (await queue.status()).consumers["billing"]
        assert (billing.depth, billing.oldest_unconsumed_timestamp_ms) == (0, None)


class TestAppendArguments:
    async def test_a_record_larger_than_a_segment_is_refused_at_the_call(
        self, queue_dir: Path
    ) -> None:
        """An oversized record raises ValueError up front and the queue keeps working."""
        async with await open_queue(queue_dir, settings=FOUR_PER_SEGMENT) as queue:
            with pytest.raises(ValueError, match="at most 208 bytes"):
                queue.append_nowait(b"x" * (4 * FRAME_BYTES))
            assert await queue.append(payload(0)) == 1

    async def test_a_mutable_payload_is_copied_when_appended(self, queue_dir: Path) -> None:
        """Changing a bytearray after append_nowait does not change the stored record."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            buffer = bytearray(payload(1))
            future = queue.append_nowait(buffer)  # type: ignore[arg-type]
            buffer[:] = payload(2)
            await future
            assert [r.payload for r in await queue.read("billing")] == [payload(1)]
