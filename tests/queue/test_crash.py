"""Tests of crash safety: a SIGKILLed writer loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from edge_node.queue import open_queue

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 3
ACKS_BEFORE_KILL = 3000


async def run_and_kill(queue_dir: Path, round_name: str) -> dict[int, str]:
    """Start a writer process, SIGKILL it mid-stream, return every record it acknowledged."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.queue.crash_writer",
        str(queue_dir),
        round_name,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    acknowledged: dict[int, str] = {}
    try:
        assert await asyncio.wait_for(process.stdout.readline(), timeout=30) == b"ready\n"
        while len(acknowledged) < ACKS_BEFORE_KILL:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            seq, text = line.decode().split()
            acknowledged[int(seq)] = text
    finally:
        # Signalled exactly once: a second send_signal() would poll() and reap the child
        # behind asyncio's child watcher, which then reports returncode 255.
        process.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(process.stdout.read(), timeout=30)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    # Lines printed before the kill were acknowledged too; a cut-off last line was not.
    for complete in rest.decode().splitlines(keepends=True):
        if complete.endswith("\n"):
            seq, text = complete.split()
            acknowledged[int(seq)] = text
    return acknowledged


@pytest.mark.slow
class TestCrashSafety:
    async def test_every_acknowledged_record_survives_sigkill(self, queue_dir: Path) -> None:
        """After repeated SIGKILLs mid-append, every acknowledged record is present and intact."""
        promised: dict[int, str] = {}
        for round_number in range(ROUNDS):
            promised.update(await run_and_kill(queue_dir, f"r{round_number}"))
        async with await open_queue(queue_dir, consumers=("check", "shipper")) as queue:
            shipped = (await queue.status()).consumers["shipper"].cursor
            found = {}
            while records := await queue.read("check", 5000):
                found.update({record.seq: record.payload.decode() for record in records})
                await queue.commit("check", records[-1].seq)
            stats = queue.stats
        assert len(promised) >= ROUNDS * ACKS_BEFORE_KILL
        missing = {seq: text for seq, text in promised.items() if found.get(seq) != text}
        assert missing == {}
        assert sorted(found) == list(range(1, len(found) + 1))
        assert stats.corrupt_records == 0
        assert 0 < shipped <= len(found)
