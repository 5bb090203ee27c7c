"""Tests of group commit: shared fsyncs, durability before acknowledgement, order."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from edge_node.queue import QueueClosed, QueueWriteError, open_queue
from tests.queue.conftest import FRAME_BYTES, FsyncProbe, payload, segment_files


class TestSharedFsync:
    async def test_many_concurrent_appends_share_few_fsyncs(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """A thousand appends from fifty concurrent tasks need far fewer than 1000 fsyncs."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            before = probe.file_syncs

            async def appender(task: int) -> None:
                for n in range(20):
                    await queue.append(payload(task * 100 + n))

            await asyncio.gather(*(appender(task) for task in range(50)))
            assert queue.last_seq == 1000
            assert probe.file_syncs - before <= 100
            assert queue.stats.group_commits == probe.file_syncs - before

    async def test_appends_made_during_an_fsync_form_the_next_batch(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """While one batch syncs, new appends wait and then share a single second fsync."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            before = probe.file_syncs
            probe.hold()
            first = queue.append_nowait(payload(1))
            assert await asyncio.to_thread(probe.entered.wait, 5)
            later = [queue.append_nowait(payload(n)) for n in range(2, 12)]
            probe.release()
            assert await asyncio.gather(first, *later) == list(range(1, 12))
            assert probe.file_syncs - before == 2


class TestDurableBeforeAcknowledged:
    async def test_no_append_resolves_while_its_fsync_is_blocked(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """An append's future stays pending until the fsync covering its record returns."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            probe.hold()
            futures = [queue.append_nowait(payload(n)) for n in range(5)]
            assert await asyncio.to_thread(probe.entered.wait, 5)
            await asyncio.sleep(0.05)
            assert not any(future.done() for future in futures)
            probe.release()
            assert await asyncio.gather(*futures) == [1, 2, 3, 4, 5]

    async def test_every_future_resolves_after_a_sync_that_covers_its_bytes(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """When a future resolves, the segment has been fsynced past the end of its record."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            inode = segment_files(queue_dir)[0].stat().st_ino
            covered: list[bool] = []

            def check(future: asyncio.Future[int]) -> None:
                covered.append(probe.synced_sizes.get(inode, 0) >= future.result() * FRAME_BYTES)

            async def appender(task: int) -> None:
                for n in range(10):
                    future = queue.append_nowait(payload(task * 100 + n))
                    future.add_done_callback(check)
                    await future

            await asyncio.gather(*(appender(task) for task in range(20)))
            assert len(covered) == 200
            assert all(covered)

    async def test_readers_never_see_a_record_before_it_is_durable(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """A written record whose fsync has not returned is invisible to consumers."""
        async with await open_queue(queue_dir, consumers=("billing",), fsync=probe) as queue:
            await queue.append(payload(1))
            probe.hold()
            future = queue.append_nowait(payload(2))
            assert await asyncio.to_thread(probe.entered.wait, 5)
            assert segment_files(queue_dir)[0].stat().st_size == 2 * FRAME_BYTES
            assert [record.seq for record in await queue.read("billing")] == [1]
            assert [record.seq for record in await queue.tail(10)] == [1]
            assert (await queue.status()).last_seq == 1
            probe.release()
            await future
            assert [record.seq for record in await queue.read("billing")] == [1, 2]


class TestOrder:
    async def test_sequence_numbers_follow_the_order_of_the_calls(self, queue_dir: Path) -> None:
        """Records get sequence numbers in call order and are read back in that order."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:
            futures = [queue.append_nowait(payload(n)) for n in range(300)]
            assert await asyncio.gather(*futures) == list(range(1, 301))
            records = await queue.read("billing", 1000)
            assert [record.payload for record in records] == [payload(n) for n in range(300)]

    async def test_each_task_sees_its_own_appends_in_order(self, queue_dir: Path) -> None:
        """Interleaved tasks each find their records in the order they appended them."""
        async with await open_queue(queue_dir, consumers=("billing",)) as queue:

            async def appender(task: int) -> list[int]:
                return [await queue.append(payload(task * 1000 + n)) for n in range(30)]

            per_task = await asyncio.gather(*(appender(task) for task in range(10)))
            records = {r.seq: r.payload for r in await queue.read("billing", 1000)}
            for task, seqs in enumerate(per_task):
                assert seqs == sorted(seqs)
                assert [records[seq] for seq in seqs] == [
                    payload(task * 1000 + n) for n in range(30)
                ]


class TestLifecycle:
    async def test_close_makes_pending_appends_durable(self, queue_dir: Path) -> None:
        """Appends not yet awaited when close() is called are written, not abandoned."""
        queue = await open_queue(queue_dir, consumers=("billing",))
        futures = [queue.append_nowait(payload(n)) for n in range(50)]
        await queue.close()
        assert [future.result() for future in futures] == list(range(1, 51))
        async with await open_queue(queue_dir, consumers=("billing",)) as reopened:
            assert len(await reopened.read("billing", 100)) == 50

    async def test_a_closed_queue_refuses_appends(self, queue_dir: Path) -> None:
        """After close, appending raises QueueClosed at the call; closing twice is harmless."""
        queue = await open_queue(queue_dir)
        await queue.close()
        await queue.close()
        with pytest.raises(QueueClosed, match="is closed"):
            queue.append_nowait(b"late")

    async def test_a_failed_fsync_is_retried_until_it_works_without_a_restart(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """A batch whose fsync fails is not acknowledged; the writer names the error while it
        lasts, appends queue up behind it, and all of them are acknowledged, once each and in
        order, when syncing works again."""
        async with await open_queue(queue_dir, consumers=("billing",), fsync=probe) as queue:
            await queue.append(payload(0))
            probe.failure = OSError(errno.ENOSPC, "No space left on device")
            first = queue.append_nowait(payload(1))
            for _ in range(500):
                if queue.write_failure is not None:
                    break
                await asyncio.sleep(0.01)
            assert queue.write_failure is not None
            later = queue.append_nowait(payload(2))
            await asyncio.sleep(0.2)
            assert not first.done()
            assert not later.done()
            assert queue.last_seq == 1
            probe.failure = None
            assert await asyncio.wait_for(asyncio.gather(first, later), 10) == [2, 3]
            assert queue.write_failure is None
            records = await queue.read("billing", 10)
            assert [record.payload for record in records] == [payload(n) for n in range(3)]
        async with await open_queue(queue_dir, consumers=("billing",)) as reopened:
            records = await reopened.read("billing", 10)
            assert [record.payload for record in records] == [payload(n) for n in range(3)]

    async def test_a_write_still_failing_at_close_fails_its_appends(
        self, queue_dir: Path, probe: FsyncProbe, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Closing gives a failing batch a bounded time, then fails it rather than hang."""
        monkeypatch.setattr("edge_node.queue.wal.CLOSE_RETRY_SECONDS", 0.2)
        queue = await open_queue(queue_dir, fsync=probe)
        probe.failure = OSError(errno.EIO, "I/O error")
        pending = queue.append_nowait(payload(1))
        await asyncio.wait_for(queue.close(), 10)
        with pytest.raises(QueueWriteError, match="not acknowledged"):
            pending.result()


class TestSharedFuture:
    async def test_appends_of_one_batch_share_one_future_resolved_after_its_sync(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """Shared appends queued for one batch get one future, pending until the sync covering
        all their records returns, then giving the batch's last sequence number."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            inode = segment_files(queue_dir)[0].stat().st_ino
            probe.hold()
            first = queue.append_nowait(payload(1))
            assert await asyncio.to_thread(probe.entered.wait, 5)
            shared = [queue.append_shared(payload(n), timestamp_ms=n) for n in range(2, 12)]
            own = queue.append_nowait(payload(12))
            assert all(future is shared[0] for future in shared)
            await asyncio.sleep(0.05)
            assert not shared[0].done()
            probe.release()
            assert await first == 1
            assert await shared[0] == 12
            assert await own == 12
            assert probe.synced_sizes[inode] >= 12 * FRAME_BYTES

    async def test_a_new_batch_gets_a_new_shared_future(
        self, queue_dir: Path, probe: FsyncProbe
    ) -> None:
        """Shared appends queued after a batch is cut wait for the next batch, not that one."""
        async with await open_queue(queue_dir, fsync=probe) as queue:
            probe.hold()
            early = queue.append_shared(payload(1), timestamp_ms=1)
            assert await asyncio.to_thread(probe.entered.wait, 5)
            late = queue.append_shared(payload(2), timestamp_ms=2)
            assert late is not early
            probe.release()
            assert await early == 1
            assert await late == 2

    async def test_a_shared_future_fails_when_its_batch_is_given_up(
        self, queue_dir: Path, probe: FsyncProbe, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A batch that cannot be written fails its shared future like every other future."""
        monkeypatch.setattr("edge_node.queue.wal.CLOSE_RETRY_SECONDS", 0.2)
        queue = await open_queue(queue_dir, fsync=probe)
        probe.failure = OSError(errno.EIO, "I/O error")
        shared = queue.append_shared(payload(1), timestamp_ms=1)
        await asyncio.wait_for(queue.close(), 10)
        with pytest.raises(QueueWriteError, match="not acknowledged"):
            shared.result()
