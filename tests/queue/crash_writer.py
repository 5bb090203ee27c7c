"""Helper process for the crash test: appends forever and prints each acknowledged record.

Usage: python -m tests.queue.crash_writer DIRECTORY ROUND

A line "SEQ PAYLOAD" is printed only after `append` returned, i.e. once the record is
durable, so every complete line is a promise the queue must keep after SIGKILL. A
"shipper" consumer reads and commits all the while, so the kill also lands mid-commit.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from edge_node.queue import QueueSettings, open_queue

SETTINGS = QueueSettings(segment_bytes=64 * 1024, max_bytes=1024**3)
WRITERS = 16


async def main(directory: str, round_name: str) -> None:
    queue = await open_queue(directory, consumers=("check", "shipper"), settings=SETTINGS)
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    async def writer(task: int) -> None:
        for n in itertools.count():
            text = f"{round_name}-{task}-{n}-" + "x" * (n % 97)
            seq = await queue.append(text.encode())
            sys.stdout.write(f"{seq} {text}\n")
            sys.stdout.flush()

    async def shipper() -> None:
        while True:
            records = await queue.read("shipper", 100)
            if records:
                await queue.commit("shipper", records[-1].seq)
            else:
                await asyncio.sleep(0.001)

    await asyncio.gather(shipper(), *(writer(task) for task in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
