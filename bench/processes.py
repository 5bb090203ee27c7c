"""The benchmarks' child processes: started pinned to CPUs, always stopped, their CPU time read.

Servers go on the first CPU we may use and load generators on the others (`split_cpus`), so
the two do not compete for a core; `cpu_seconds` before and after a measurement gives the
server's own share of its CPU and what other processes took of it meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any


def spawn_pinned(command: list[str], cpus: set[int] | None, **popen: Any) -> subprocess.Popen[Any]:
    """Start `command` on `cpus` (None: anywhere); the mask is inherited before any thread."""
    if cpus is None:
        return subprocess.Popen(command, **popen)
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return subprocess.Popen(command, **popen)
    finally:
        os.sched_setaffinity(0, saved)


def collect(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float) -> str:
    """The process's stdout once it exits; it is killed if it outlives `timeout` or we stop."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        stop(process)
    return out.decode() if isinstance(out, bytes) else out


def stop(process: subprocess.Popen[Any], grace: float = 0) -> None:
    """End `process`: SIGTERM and up to `grace` seconds to exit, then SIGKILL."""
    if grace and process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    if process.poll() is None:
        process.kill()
        process.wait()


def cpu_seconds(pid: int, cpus: set[int]) -> tuple[float, float]:
    """CPU time used so far by process `pid` (all threads), and by anything on `cpus`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = int(fields[11]) + int(fields[12])
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name[3:].isdigit() and name.startswith("cpu") and int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            busy += sum(int(tick) for tick in ticks[:8]) - int(ticks[3]) - int(ticks[4])
    tick = os.sysconf("SC_CLK_TCK")
    return own / tick, busy / tick


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """The servers' CPU and the load generator's: the first CPU we may use, and the rest."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, set(allowed[1:])
