"""Copying a queue directory from outside while its owner appends, consumes and deletes."""

from __future__ import annotations

from pathlib import Path

from edge_node.queue import QueueSettings, open_queue
from edge_node.queue.copying import QueueCopy
from edge_node.queue.segments import list_segment_files
from tests.queue.conftest import FRAME_BYTES, payload

SMALL = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)


class TestQueueCopy:
    async def test_pinned_segments_survive_their_deletion_by_the_owner(
        self, tmp_path: Path
    ) -> None:
        """Segments pinned before the owner consumed and deleted them are still in the copy,
        which opens as a queue whose consumer resumes from the cursor read after the pin."""
        source = tmp_path / "queue"
        queue = await open_queue(source, consumers=["billing"], settings=SMALL)
        for n in range(1, 11):
            await queue.append(payload(n))
        copy = QueueCopy(source, tmp_path / "holding")
        assert copy.pin_segments() == len(list_segment_files(source)) > 1
        copy.capture_cursors()
        await queue.commit("billing", 6)  # after the cursors were read: deletes old segments
        assert list_segment_files(source)[0][0] > 1
        for n in range(11, 13):
            await queue.append(payload(n))
        copy.pin_segments()
        copy.write_to(tmp_path / "copy")
        await queue.close()

        restored = await open_queue(tmp_path / "copy", consumers=["billing"], settings=SMALL)
        try:
            records = await restored.read("billing", 100)
            assert [record.payload for record in records] == [payload(n) for n in range(1, 13)]
        finally:
            await restored.close()
        copy.release()
        assert not (tmp_path / "holding").exists()

    async def test_cursors_are_read_at_capture_time(self, tmp_path: Path) -> None:
        """The copy holds every consumer's cursor as captured, not as it moved afterwards."""
        source = tmp_path / "queue"
        queue = await open_queue(source, consumers=["billing", "audit"], settings=SMALL)
        for n in range(1, 4):
            await queue.append(payload(n))
        await queue.commit("audit", 2)
        copy = QueueCopy(source, tmp_path / "holding")
        copy.pin_segments()
        assert copy.capture_cursors() == {"audit": 2, "billing": 0}
        await queue.commit("audit", 3)
        copy.write_to(tmp_path / "copy")
        await queue.close()
        restored = await open_queue(tmp_path / "copy", settings=SMALL)
        try:
            assert [r.seq for r in await restored.read("audit", 10)] == [3]
            assert [r.seq for r in await restored.read("billing", 10)] == [1, 2, 3]
        finally:
            await restored.close()
