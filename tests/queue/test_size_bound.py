"""Tests of the size bound: a full queue refuses appends loudly and drops nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_node.queue import QueueFull, QueueSettings, open_queue
from tests.queue.conftest import FRAME_BYTES, payload

# Room for exactly 19 records; segments of four.
BOUNDED = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=19 * FRAME_BYTES + 10)


class TestSizeBound:
    async def test_the_append_past_max_bytes_raises_at_the_call_and_drops_nothing(
        self, queue_dir: Path
    ) -> None:
        """The 20th append raises QueueFull synchronously; the 19 before it all become durable."""
        async with await open_queue(queue_dir, consumers=("billing",), settings=BOUNDED) as queue:
            accepted = [queue.append_nowait(payload(n)) for n in range(19)]
            assert queue.free_bytes() < FRAME_BYTES
            with pytest.raises(QueueFull, match="'billing' is furthest behind") as raised:
                queue.append_nowait(payload(19))
            assert raised.value.max_bytes == BOUNDED.max_bytes
            assert await asyncio.gather(*accepted) == list(range(1, 20))
            records = await queue.read("billing", 100)
            assert [record.payload for record in records] == [payload(n) for n in range(19)]
            assert (await queue.status()).bytes <= BOUNDED.max_bytes

    async def test_appends_succeed_again_once_consumers_catch_up(self, queue_dir: Path) -> None:
        """Committing lets consumed segments be deleted, which makes room for new records."""
        async with await open_queue(queue_dir, consumers=("billing",), settings=BOUNDED) as queue:
            for n in range(19):
                await queue.append(payload(n))
            with pytest.raises(QueueFull):
                await queue.append(payload(19))
            await queue.commit("billing", 19)
            assert await queue.append(payload(19)) == 20

    async def test_the_bound_holds_across_a_reopen(self, queue_dir: Path) -> None:
        """Bytes already on disk count against the bound after the queue is reopened."""
        async with await open_queue(queue_dir, consumers=("billing",), settings=BOUNDED) as queue:
            for n in range(19):
                await queue.append(payload(n))
        async with await open_queue(queue_dir, consumers=("billing",), settings=BOUNDED) as queue:
            with pytest.raises(QueueFull):
                queue.append_nowait(payload(19))
            assert queue.last_seq == 19
