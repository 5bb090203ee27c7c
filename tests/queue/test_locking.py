"""Tests of directory ownership: one process, one open queue per directory."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from edge_node.queue import QueueLocked, open_queue

REPO = Path(__file__).resolve().parents[2]

OPEN_FROM_ANOTHER_PROCESS = """
import asyncio, sys
from edge_node.queue import QueueLocked, open_queue

async def main():
    try:
        queue = await open_queue(sys.argv[1])
    except QueueLocked as exc:
        print(exc)
        sys.exit(3)
    await queue.close()

asyncio.run(main())
"""


class TestExclusiveLock:
    async def test_a_second_open_of_the_same_directory_is_refused(self, queue_dir: Path) -> None:
        """While a queue is open, opening its directory again raises QueueLocked naming the pid."""
        async with await open_queue(queue_dir):
            with pytest.raises(QueueLocked, match="already open") as raised:
                await open_queue(queue_dir)
            assert raised.value.owner_pid == os.getpid()

    async def test_another_process_cannot_open_a_directory_in_use(self, queue_dir: Path) -> None:
        """A second worker process gets a clear refusal rather than sharing the segments."""
        async with await open_queue(queue_dir):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                OPEN_FROM_ANOTHER_PROCESS,
                str(queue_dir),
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 3, err.decode()
        assert f"already open in process {os.getpid()}" in out.decode()

    async def test_closing_releases_the_directory(self, queue_dir: Path) -> None:
        """After close, the directory can be opened again."""
        queue = await open_queue(queue_dir)
        await queue.close()
        reopened = await open_queue(queue_dir)
        await reopened.close()
