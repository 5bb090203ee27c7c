"""Tests of read-only inspection from outside the process that owns the queue."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from edge_node.queue import QueueSettings, WriteAheadQueue, inspect_queue, open_queue, tail_records
from tests.queue.conftest import FRAME_BYTES, payload

REPO = Path(__file__).resolve().parents[2]
FOUR_PER_SEGMENT = QueueSettings(segment_bytes=4 * FRAME_BYTES, max_bytes=64 * FRAME_BYTES)

INSPECT_FROM_ANOTHER_PROCESS = """
import dataclasses, json, sys
from edge_node.queue import inspect_queue, tail_records

status = dataclasses.asdict(inspect_queue(sys.argv[1]))
tail = [[r.seq, r.timestamp_ms, r.payload.decode()] for r in tail_records(sys.argv[1], 3)]
print(json.dumps({"status": status, "tail": tail}))
"""


async def run_inspector(directory: Path) -> dict[str, object]:
    """Inspect the queue from a separate Python process and return what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        INSPECT_FROM_ANOTHER_PROCESS,
        str(directory),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


def listing(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime in ns) of every file in the directory."""
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in directory.iterdir()
    }


async def populated(queue_dir: Path) -> WriteAheadQueue:
    """An open queue of ten records over three segments, with two consumers at 2 and 6."""
    queue = await open_queue(queue_dir, consumers=("billing", "audit"), settings=FOUR_PER_SEGMENT)
    for n in range(10):
        await queue.append(payload(n), timestamp_ms=1_700_000_000_000 + n)
    await queue.commit("billing", 6)
    await queue.commit("audit", 2)
    return queue


class TestInspectionFromOutside:
    async def test_another_process_sees_the_same_status_while_the_queue_is_open(
        self, queue_dir: Path
    ) -> None:
        """inspect_queue in another process reports what the owner reports, bar max_bytes."""
        async with await populated(queue_dir) as queue:
            outside = await run_inspector(queue_dir)
            inside = await queue.status()
        status = outside["status"]
        assert isinstance(status, dict)
        assert status["max_bytes"] is None
        assert (status["first_seq"], status["last_seq"]) == (inside.first_seq, inside.last_seq)
        assert (status["bytes"], status["segment_count"]) == (inside.bytes, inside.segment_count)
        assert status["consumers"] == {
            "audit": {
                "name": "audit",
                "cursor": 2,
                "depth": 8,
                "oldest_unconsumed_timestamp_ms": 1_700_000_000_002,
            },
            "billing": {
                "name": "billing",
                "cursor": 6,
                "depth": 4,
                "oldest_unconsumed_timestamp_ms": 1_700_000_000_006,
            },
        }

    async def test_another_process_can_tail_the_newest_records(self, queue_dir: Path) -> None:
        """tail_records returns the newest records with their sequence numbers and timestamps."""
        async with await populated(queue_dir):
            outside = await run_inspector(queue_dir)
        assert outside["tail"] == [
            [seq, 1_700_000_000_000 + seq - 1, payload(seq - 1).decode()] for seq in (8, 9, 10)
        ]

    async def test_inspection_changes_nothing_and_leaves_the_owner_working(
        self, queue_dir: Path
    ) -> None:
        """Inspecting takes no lock and touches no file, not even a leftover temp cursor."""
        async with await populated(queue_dir) as queue:
            (queue_dir / "billing.cursor.tmp").write_bytes(b"half a cursor")
            before = listing(queue_dir)
            await run_inspector(queue_dir)
            inspect_queue(queue_dir)
            tail_records(queue_dir, 100)
            assert listing(queue_dir) == before
            assert await queue.append(payload(10)) == 11

    async def test_the_owner_sees_the_same_tail(self, queue_dir: Path) -> None:
        """The owning process's tail() matches tail_records() from outside."""
        async with await populated(queue_dir) as queue:
            assert await queue.tail(4) == tail_records(queue_dir, 4)
            assert [record.seq for record in await queue.tail(100)] == list(range(1, 11))
