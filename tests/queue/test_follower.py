"""A consumer following a queue that another owner holds: reads, commits, and retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.queue import QueueFollower, QueueSettings, open_queue
from tests.queue.conftest import FRAME_BYTES, payload

FOUR_PER_SEGMENT = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestQueueFollower:
    async def test_reads_and_commits_what_the_owner_appended(self, tmp_path: Path) -> None:
        """Records the owner made durable are read by the follower in order, and a commit the
        follower makes is what the owner's cursor becomes once it adopts the cursor files."""
        owner = await open_queue(tmp_path, consumers=("billing",), settings=FOUR_PER_SEGMENT)
        async with owner:
            for n in range(10):
                await owner.append(payload(n))
            follower = QueueFollower(tmp_path, "billing", settle_seconds=0)
            records = await follower.read("billing", 6)
            assert [r.payload for r in records] == [payload(n) for n in range(6)]
            await follower.commit("billing", 6)
            assert [r.seq for r in await follower.read("billing", 100)] == [7, 8, 9, 10]
            assert (await follower.status()).consumers["billing"].cursor == 6
            assert (await owner.status()).consumers["billing"].cursor == 0
            assert await owner.adopt_cursors() == 1
            status = await owner.status()
            assert status.consumers["billing"].cursor == 6
            assert status.first_seq == 5  # the segment of records 1-4 was deleted by the owner

    async def test_records_not_yet_settled_are_not_read(self, tmp_path: Path) -> None:
        """A record is read only once it has been seen for settle_seconds: time enough for
        the owner's fsync, so the follower never acts on a record that could still be lost."""
        clock = Clock()
        owner = await open_queue(tmp_path, consumers=("billing",))
        async with owner:
            await owner.append(payload(1))
            follower = QueueFollower(tmp_path, "billing", settle_seconds=1.0, clock=clock)
            assert await follower.read("billing") == []
            await owner.append(payload(2))
            clock.now += 1.5
            assert [r.seq for r in await follower.read("billing")] == [1]
            clock.now += 1.5
            assert [r.seq for r in await follower.read("billing")] == [1, 2]

    async def test_commits_only_move_forward_and_stay_within_what_was_read(
        self, tmp_path: Path
    ) -> None:
        """A commit behind the cursor on disk, or past the newest settled record, is refused."""
        owner = await open_queue(tmp_path, consumers=("billing",))
        async with owner:
            for n in range(3):
                await owner.append(payload(n))
            follower = QueueFollower(tmp_path, "billing", settle_seconds=0)
            await follower.read("billing")
            await follower.commit("billing", 2)
            with pytest.raises(ValueError, match="only move forward"):
                await follower.commit("billing", 1)
            with pytest.raises(ValueError, match="newest settled record is 3"):
                await follower.commit("billing", 4)
            with pytest.raises(ValueError, match="reads for 'billing' only"):
                await follower.read("other")

    async def test_a_directory_without_owner_can_be_followed(self, tmp_path: Path) -> None:
        """A queue left by a worker that no longer runs is still read and committed."""
        owner = await open_queue(tmp_path, consumers=("billing",))
        async with owner:
            await owner.append(payload(1))
        follower = QueueFollower(tmp_path, "billing", settle_seconds=0)
        assert [r.seq for r in await follower.read("billing")] == [1]
        await follower.commit("billing", 1)
        reopened = await open_queue(tmp_path, consumers=("billing",))
        async with reopened:
            assert (await reopened.status()).consumers["billing"].cursor == 1

    async def test_records_appended_between_looks_are_seen_across_segments(
        self, tmp_path: Path
    ) -> None:
        """Each look scans only what was appended since the last one, within the last
        segment and into the next ones, and misses nothing."""
        owner = await open_queue(tmp_path, consumers=("billing",), settings=FOUR_PER_SEGMENT)
        async with owner:
            follower = QueueFollower(tmp_path, "billing", settle_seconds=0)
            seen: list[int] = []
            for n in range(11):
                await owner.append(payload(n))
                if n % 3 == 0:
                    records = await follower.read("billing", 100, after=seen[-1] if seen else None)
                    seen += [record.seq for record in records]
            seen += [r.seq for r in await follower.read("billing", 100, after=seen[-1])]
            assert seen == list(range(1, 12))
