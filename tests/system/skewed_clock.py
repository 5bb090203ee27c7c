"""Runs `edge-node` with its wall clock offset by the seconds written in a file, re-read live.

`python -m tests.system.skewed_clock OFFSET_FILE [edge-node arguments...]`. Every wall-clock
reading of edge-node goes through `time.time` or `time.time_ns` (edge_node/clock.py, the
meter, the billing flush), so replacing both before edge-node is imported moves the clock
of this one process and no other: a jump forward is writing a larger offset into the file,
which a thread polls. Monotonic time, which asyncio's timers use, is left alone, as a real
clock step leaves it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

POLL_SECONDS = 0.05


class SkewedClock:
    """The offset in nanoseconds, kept in step with the file by a daemon thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_ns = 0
        self._seen: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> None:
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) == self._seen:
                return
            self._seen = (stat.st_mtime_ns, stat.st_size)
            self.offset_ns = int(float(self.path.read_text() or 0) * 1e9)
        except (OSError, ValueError):
            self.offset_ns = 0

    def follow(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            self.refresh()


def install(path: Path) -> SkewedClock:
    """Offset this process's `time.time` and `time.time_ns` by the file's seconds."""
    clock = SkewedClock(path)
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + clock.offset_ns / 1e9
    time.time_ns = lambda: real_time_ns() + clock.offset_ns
    threading.Thread(target=clock.follow, name="skewed-clock", daemon=True).start()
    return clock


def main() -> int:
    install(Path(sys.argv[1]))
    from edge_node.cli.main import main as edge_node_main  # noqa: PLC0415 - after the clock moved

    return edge_node_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
