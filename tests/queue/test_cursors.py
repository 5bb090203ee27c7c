"""Tests of consumer cursors: independent consumers, atomic persistence, damaged files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edge_node.queue import CorruptCursor, open_queue
from edge_node.queue.cursors import format_cursor
from tests.queue.conftest import FsyncProbe, payload


async def fill(queue_dir: Path, count: int, consumers: tuple[str, ...] = ("billing",)) -> None:
    """Append `count` records to a fresh queue and close it."""
    async with await open_queue(queue_dir, consumers=consumers) as queue:
        for n in range(count):
            await queue.append(payload(n))


class TestConsumers:
    async def test_reading_does_not_move_the_cursor(self, queue_dir: Path) -> None:
        """Until a commit, every read returns the same first records again."""
        await fill(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            first = await queue.read("billing", 3)
            again = await queue.read("billing", 3)
            assert [r.seq for r in first] == [r.seq for r in again] == [1, 2, 3]

    async def test_a_commit_moves_the_next_read_past_the_committed_records(
        self, queue_dir: Path
    ) -> None:
        """After commit(n) the consumer's next read starts at record n + 1."""
        await fill(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.commit("billing", 3)
            assert [r.seq for r in await queue.read("billing")] == [4, 5]
            await queue.commit("billing", 5)
            assert await queue.read("billing") == []

    async def test_consumers_read_and_commit_independently(self, queue_dir: Path) -> None:
        """One consumer's commits do not move another's position."""
        await fill(queue_dir, 6, ("billing", "audit"))
        async with await open_queue(queue_dir, consumers=("billing", "audit")) as queue:
            await queue.commit("billing", 4)
            assert [r.seq for r in await queue.read("billing")] == [5, 6]
            assert [r.seq for r in await queue.read("audit")] == [1, 2, 3, 4, 5, 6]
            status = await queue.status()
            assert status.consumers["billing"].cursor == 4
            assert status.consumers["billing"].depth == 2
            assert status.consumers["audit"].depth == 6

    async def test_reading_after_a_position_skips_ahead_of_the_cursor(
        self, queue_dir: Path
    ) -> None:
        """read(after=n) starts at record n + 1 without moving the cursor, and never returns
        records the consumer has already committed."""
        await fill(queue_dir, 6)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert [r.seq for r in await queue.read("billing", 2, after=3)] == [4, 5]
            assert [r.seq for r in await queue.read("billing", 2)] == [1, 2]
            await queue.commit("billing", 5)
            assert [r.seq for r in await queue.read("billing", after=2)] == [6]
            assert await queue.read("billing", after=6) == []

    async def test_committed_positions_survive_a_reopen(self, queue_dir: Path) -> None:
        """A cursor committed before close is where the consumer resumes after reopening."""
        await fill(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.commit("billing", 2)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert [r.seq for r in await queue.read("billing")] == [3, 4, 5]

    async def test_a_consumer_declared_later_starts_at_the_oldest_record(
        self, queue_dir: Path
    ) -> None:
        """Declaring a new consumer on an existing queue replays what is kept, skipping nothing."""
        await fill(queue_dir, 4)
        async with await open_queue(queue_dir, consumers=("billing", "audit")) as queue:
            assert [r.seq for r in await queue.read("audit")] == [1, 2, 3, 4]

    async def test_commits_that_move_backwards_or_past_the_end_are_refused(
        self, queue_dir: Path
    ) -> None:
        """A cursor only moves forward and never past the newest durable record."""
        await fill(queue_dir, 3)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.commit("billing", 2)
            with pytest.raises(ValueError, match="only move forward"):
                await queue.commit("billing", 1)
            with pytest.raises(ValueError, match="newest durable record is 3"):
                await queue.commit("billing", 4)
            with pytest.raises(ValueError, match="unknown queue consumer 'stripe'"):
                await queue.read("stripe")
            assert [r.seq for r in await queue.read("billing")] == [3]


class TestDamagedCursorFiles:
    @pytest.mark.parametrize(
        "content",
        [
            b"",
            format_cursor("billing", 3)[:25],
            format_cursor("billing", 3).replace(b"seq=3", b"seq=0"),
            format_cursor("audit", 3),
            b"\x00" * 64,
        ],
        ids=["empty", "half-written", "checksum-mismatch", "other-consumer", "zeros"],
    )
    async def test_a_damaged_live_cursor_stops_the_open_without_guessing(
        self, queue_dir: Path, content: bytes
    ) -> None:
        """A corrupt cursor raises CorruptCursor naming it; it is not reset to 0 or to the end."""
        await fill(queue_dir, 5)
        cursor_file = queue_dir / "billing.cursor"
        cursor_file.write_bytes(content)
        with pytest.raises(CorruptCursor, match=r"billing\.cursor") as raised:
            await open_queue(queue_dir, consumers=("billing",))
        assert raised.value.consumer == "billing"
        assert cursor_file.read_bytes() == content
        cursor_file.write_bytes(format_cursor("billing", 2))
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert [r.seq for r in await queue.read("billing")] == [3, 4, 5]

    async def test_a_leftover_temp_cursor_is_ignored_and_removed(self, queue_dir: Path) -> None:
        """A half-written replacement left by a crash never replaces the good cursor."""
        await fill(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.commit("billing", 2)
        temp = queue_dir / "billing.cursor.tmp"
        temp.write_bytes(b"edge-node-queue-cursor v1 consumer=billing seq=5")
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert not temp.exists()
            assert [r.seq for r in await queue.read("billing")] == [3, 4, 5]

    async def test_a_commit_that_dies_before_its_rename_leaves_the_old_cursor(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """When syncing the new cursor fails, the committed position stays the previous one."""
        await fill(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",), fsync=probe) as queue:
            await queue.commit("billing", 2)
            probe.failure = OSError(errno.EIO, "I/O error")
            with pytest.raises(OSError, match="I/O error"):
                await queue.commit("billing", 4)
            probe.failure = None
            assert [r.seq for r in await queue.read("billing")] == [3, 4, 5]
        assert (queue_dir / "billing.cursor.tmp").exists()
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert [r.seq for r in await queue.read("billing")] == [3, 4, 5]
        assert sorted(os.listdir(queue_dir)) == [
            "00000000000000000001.seg",
            "billing.cursor",
            "lock",
            "reserve",
        ]
