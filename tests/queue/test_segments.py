"""Tests of segment files: rolling at the configured size, and deleting consumed ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_node.queue import QueueSettings, open_queue
from edge_node.queue.framing import Frame
from edge_node.queue.scanning import scan_segment
from tests.queue.conftest import FRAME_BYTES, FsyncProbe, payload, segment_files

FOUR_PER_SEGMENT = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)


class TestSegmentRoll:
    async def test_a_full_segment_rolls_to_a_file_named_after_its_first_record(
        self, queue_dir: Path
    ) -> None:
        """Ten records at four per segment land in three files named 1, 5 and 9."""
        async with await open_queue(queue_dir, settings=FOUR_PER_SEGMENT) as queue:
            await asyncio.gather(*(queue.append(payload(n)) for n in range(10)))
        files = segment_files(queue_dir)
        assert [int(path.stem) for path in files] == [1, 5, 9]
        assert [path.stat().st_size for path in files] == [208, 208, 104]
        seqs = [
            [item.seq for item in scan_segment(path) if isinstance(item, Frame)] for path in files
        ]
        assert seqs == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]

    async def test_creating_a_segment_syncs_the_directory_before_acknowledging(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """The append that rolls is acknowledged only after a directory fsync; others need none."""
        async with await open_queue(queue_dir, settings=FOUR_PER_SEGMENT, fsync=probe) as queue:
            rolled = []
            for n in range(10):
                before = probe.directory_syncs
                seq = await queue.append(payload(n))
                if probe.directory_syncs > before:
                    rolled.append(seq)
        assert rolled == [5, 9]

    async def test_records_are_read_across_segment_boundaries(self, queue_dir: Path) -> None:
        """A consumer reads one contiguous run of records whatever segments hold them."""
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            for n in range(10):
                await queue.append(payload(n))
            records = await queue.read("billing", 7)
            assert [record.seq for record in records] == [1, 2, 3, 4, 5, 6, 7]
            assert [record.payload for record in records] == [payload(n) for n in range(7)]


class TestRetention:
    async def test_only_segments_behind_every_cursor_are_deleted(self, queue_dir: Path) -> None:
        """With one consumer at 10 and one at 20, segments ending at or before 8 go."""
        async with await open_queue(
            queue_dir, consumers=("billing", "audit"), settings=FOUR_PER_SEGMENT
        ) as queue:
            for n in range(20):
                await queue.append(payload(n))
            await queue.commit("billing", 20)
            await queue.commit("audit", 10)
            assert [int(path.stem) for path in segment_files(queue_dir)] == [9, 13, 17]
            assert queue.stats.deleted_segments == 2
            records = await queue.read("audit", 100)
            assert [record.seq for record in records] == list(range(11, 21))

    async def test_a_declared_consumer_holds_records_before_it_ever_commits(
        self, queue_dir: Path
    ) -> None:
        """A consumer that has not committed yet keeps every segment alive."""
        async with await open_queue(
            queue_dir, consumers=("billing", "audit"), settings=FOUR_PER_SEGMENT
        ) as queue:
            for n in range(20):
                await queue.append(payload(n))
            await queue.commit("billing", 20)
            assert len(segment_files(queue_dir)) == 5
            assert len(await queue.read("audit", 100)) == 20

    async def test_the_active_segment_survives_when_everything_is_consumed(
        self, queue_dir: Path
    ) -> None:
        """Once all records are consumed only the segment being appended to remains."""
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            for n in range(10):
                await queue.append(payload(n))
            await queue.commit("billing", 10)
            assert [int(path.stem) for path in segment_files(queue_dir)] == [9]
            assert await queue.append(payload(10)) == 11
