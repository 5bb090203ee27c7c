"""Tests of recovery: torn tails are cut, damage in the middle is kept and stops readers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_node.queue import CorruptRecord, QueueSettings, open_queue
from edge_node.queue.framing import HEADER_SIZE
from tests.queue.conftest import FRAME_BYTES, flip_byte, payload, segment_files

FOUR_PER_SEGMENT = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)


async def append_one_by_one(
    queue_dir: Path, count: int, settings: QueueSettings | None = None
) -> None:
    """Append `count` records, each in its own group commit, and close the queue."""
    async with await open_queue(queue_dir, consumers=("billing",), settings=settings) as queue:
        for n in range(count):
            await queue.append(payload(n))


async def payloads(queue_dir: Path, count: int = 100) -> list[bytes]:
    """Payloads the billing consumer reads from its cursor, through a fresh open."""
    async with await open_queue(queue_dir, consumers=("billing",)) as queue:
        return [record.payload for record in await queue.read("billing", count)]


class TestTornTail:
    async def test_a_last_record_cut_at_any_byte_is_truncated_and_the_rest_kept(
        self, queue_dir: Path
    ) -> None:
        """Whatever byte a torn write stops at, exactly the partial record is cut off."""
        await append_one_by_one(queue_dir, 5)
        segment = segment_files(queue_dir)[0]
        intact = segment.read_bytes()
        for kept in range(1, FRAME_BYTES):
            segment.write_bytes(intact[: 4 * FRAME_BYTES + kept])
            async with await open_queue(queue_dir, consumers=("billing",)) as queue:
                assert queue.stats.truncated_tail_records == 1
                assert queue.stats.truncated_tail_bytes == kept
                assert queue.stats.corrupt_records == 0
                assert segment.stat().st_size == 4 * FRAME_BYTES
                records = await queue.read("billing", 100)
                assert [r.payload for r in records] == [payload(n) for n in range(4)]
                assert await queue.append(payload(99)) == 5
            segment.write_bytes(intact)

    @pytest.mark.parametrize("field_offset", [4, 8, 16, HEADER_SIZE + 3], ids=str)
    async def test_a_flipped_byte_in_the_last_record_truncates_it(
        self, queue_dir: Path, field_offset: int
    ) -> None:
        """A damaged final record (checksum, length, sequence or payload) is cut off."""
        await append_one_by_one(queue_dir, 5)
        segment = segment_files(queue_dir)[0]
        flip_byte(segment, 4 * FRAME_BYTES + field_offset)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert queue.stats.truncated_tail_records == 1
            assert queue.stats.truncated_tail_bytes == FRAME_BYTES
            assert queue.last_seq == 4
        assert await payloads(queue_dir) == [payload(n) for n in range(4)]

    async def test_a_cut_tail_is_logged_and_its_bytes_kept_in_quarantine(
        self, queue_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Cutting a damaged tail is never silent: a warning names the segment, the offset
        and the records cut, and the cut bytes are copied to quarantine/ first."""
        await append_one_by_one(queue_dir, 5)
        segment = segment_files(queue_dir)[0]
        flip_byte(segment, 4 * FRAME_BYTES + HEADER_SIZE + 3)
        damaged = segment.read_bytes()[4 * FRAME_BYTES :]
        with caplog.at_level("WARNING", logger="edge_node.queue.recovery"):
            async with await open_queue(queue_dir, consumers=("billing",)):
                pass
        assert f"segment {segment.name} at offset {4 * FRAME_BYTES}: 1 records" in caplog.text
        kept = queue_dir / "quarantine" / f"{segment.name}.{4 * FRAME_BYTES}.tail"
        assert kept.read_bytes() == damaged

    async def test_damage_inside_the_final_batch_cuts_that_batch_from_the_damage(
        self, queue_dir: Path
    ) -> None:
        """Intact records after damage are still cut when they belong to the same final batch."""
        await append_one_by_one(queue_dir, 5)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await asyncio.gather(*[queue.append_nowait(payload(n)) for n in range(5, 10)])
            assert queue.stats.group_commits == 1
        flip_byte(segment_files(queue_dir)[0], 6 * FRAME_BYTES + HEADER_SIZE)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert queue.stats.truncated_tail_records == 4
            assert queue.stats.truncated_tail_bytes == 4 * FRAME_BYTES
            assert queue.stats.corrupt_records == 0
            assert queue.last_seq == 6

    async def test_numbering_skips_past_a_truncated_record_a_consumer_had_committed(
        self, queue_dir: Path
    ) -> None:
        """A new record never reuses a sequence number a consumer has already committed."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            for n in range(5):
                await queue.append(payload(n))
            await queue.commit("billing", 5)
        flip_byte(segment_files(queue_dir)[0], 4 * FRAME_BYTES + HEADER_SIZE)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert await queue.append(payload(5)) == 6
            assert [r.payload for r in await queue.read("billing")] == [payload(5)]


class TestCorruptionInTheMiddle:
    async def test_a_consumer_stops_at_a_damaged_middle_record(self, queue_dir: Path) -> None:
        """Records before the damage are read; at it the consumer gets CorruptRecord, not a skip."""
        await append_one_by_one(queue_dir, 10)
        segment = segment_files(queue_dir)[0]
        flip_byte(segment, 4 * FRAME_BYTES + HEADER_SIZE + 2)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            assert queue.stats.corrupt_records == 1
            assert queue.stats.truncated_tail_records == 0
            assert segment.stat().st_size == 10 * FRAME_BYTES
            assert queue.last_seq == 10
            records = await queue.read("billing", 100)
            assert [r.payload for r in records] == [payload(n) for n in range(4)]
            await queue.commit("billing", 4)
            for _ in range(2):
                with pytest.raises(CorruptRecord, match="cannot read record 5") as raised:
                    await queue.read("billing", 100)
            error = raised.value
            assert (error.consumer, error.segment, error.offset) == ("billing", segment, 208)
            assert (error.sequence, error.last_sequence) == (5, 5)
            assert queue.stats.corrupt_records == 1

    async def test_committing_past_the_damage_deliberately_resumes_after_it(
        self, queue_dir: Path
    ) -> None:
        """The damaged range can be skipped only on purpose, and every later record is intact."""
        await append_one_by_one(queue_dir, 10)
        flip_byte(segment_files(queue_dir)[0], 4 * FRAME_BYTES + HEADER_SIZE)
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            await queue.commit("billing", 4)
            with pytest.raises(CorruptRecord) as raised:
                await queue.read("billing")
            await queue.commit("billing", raised.value.last_sequence)
            records = await queue.read("billing")
            assert [r.payload for r in records] == [payload(n) for n in range(5, 10)]

    async def test_damage_in_an_older_segment_is_found_and_counted_by_the_reader(
        self, queue_dir: Path
    ) -> None:
        """Damage in a sealed segment stops the consumer when reached and is counted then."""
        await append_one_by_one(queue_dir, 12, settings=FOUR_PER_SEGMENT)
        first = segment_files(queue_dir)[0]
        flip_byte(first, FRAME_BYTES + HEADER_SIZE)
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            assert queue.stats.corrupt_records == 0
            assert [r.seq for r in await queue.read("billing")] == [1]
            await queue.commit("billing", 1)
            with pytest.raises(CorruptRecord) as raised:
                await queue.read("billing")
            assert (raised.value.segment, raised.value.sequence) == (first, 2)
            assert queue.stats.corrupt_records == 1

    async def test_verify_finds_damage_in_an_older_segment_before_any_reader(
        self, queue_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """verify() (run by the daemon after open) checks every sealed segment: a flipped
        byte far from any consumer is counted once, logged with segment and offset, and
        returned, however often it is found again."""
        await append_one_by_one(queue_dir, 12, settings=FOUR_PER_SEGMENT)
        second = segment_files(queue_dir)[1]
        flip_byte(second, 2 * FRAME_BYTES + HEADER_SIZE)
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            with caplog.at_level("ERROR", logger="edge_node.queue.wal"):
                found = await queue.verify()
            assert [(path, run.offset) for path, run in found] == [(second, 2 * FRAME_BYTES)]
            assert queue.stats.corrupt_records == 1
            assert f"segment {second.name} is damaged at offset {2 * FRAME_BYTES}" in caplog.text
            await queue.verify()
            assert queue.stats.corrupt_records == 1

    async def test_a_missing_segment_is_reported_not_skipped(self, queue_dir: Path) -> None:
        """Records whose segment file vanished stop the consumer with their exact range."""
        await append_one_by_one(queue_dir, 12, settings=FOUR_PER_SEGMENT)
        segment_files(queue_dir)[1].unlink()
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            assert [r.seq for r in await queue.read("billing")] == [1, 2, 3, 4]
            await queue.commit("billing", 4)
            with pytest.raises(CorruptRecord, match=r"records 5\.\.8") as raised:
                await queue.read("billing")
            assert (raised.value.sequence, raised.value.last_sequence) == (5, 8)

    async def test_records_missing_from_the_end_of_a_segment_are_reported_there(
        self, queue_dir: Path
    ) -> None:
        """A sealed segment that ends early stops the consumer, naming that segment."""
        await append_one_by_one(queue_dir, 12, settings=FOUR_PER_SEGMENT)
        first = segment_files(queue_dir)[0]
        with first.open("r+b") as file:
            file.truncate(3 * FRAME_BYTES)
        async with await open_queue(
            queue_dir, consumers=("billing",), settings=FOUR_PER_SEGMENT
        ) as queue:
            assert [r.seq for r in await queue.read("billing")] == [1, 2, 3]
            await queue.commit("billing", 3)
            with pytest.raises(CorruptRecord, match="cannot read record 4") as raised:
                await queue.read("billing")
            assert (raised.value.segment, raised.value.offset) == (first, 3 * FRAME_BYTES)

    async def test_durable_records_vanishing_from_the_active_segment_are_reported(
        self, queue_dir: Path
    ) -> None:
        """If acknowledged bytes disappear under an open queue, the reader raises, not waits."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            for n in range(5):
                await queue.append(payload(n))
            with segment_files(queue_dir)[0].open("r+b") as file:
                file.truncate(4 * FRAME_BYTES)
            await queue.commit("billing", 4)
            with pytest.raises(CorruptRecord, match="cannot read record 5"):
                await queue.read("billing")


class TestReopen:
    async def test_reopening_after_close_keeps_records_cursors_and_numbering(
        self, queue_dir: Path
    ) -> None:
        """Everything acknowledged before close is there after reopening, and numbering goes on."""
        async with await open_queue(
            queue_dir, consumers=("billing", "audit"), settings=FOUR_PER_SEGMENT
        ) as queue:
            await asyncio.gather(*(queue.append(payload(n)) for n in range(30)))
            await queue.commit("audit", 7)
        async with await open_queue(
            queue_dir, consumers=("billing", "audit"), settings=FOUR_PER_SEGMENT
        ) as queue:
            assert queue.stats.truncated_tail_records == queue.stats.corrupt_records == 0
            billing = await queue.read("billing", 100)
            assert [r.payload for r in billing] == [payload(n) for n in range(30)]
            assert [r.seq for r in await queue.read("audit", 100)] == list(range(8, 31))
            assert await queue.append(payload(30)) == 31
