"""Stopping the supervisor's workers: SIGTERM, a grace period, SIGKILL; the unclean stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from edge_node.cli.generations import Worker

log = logging.getLogger(__name__)

STOP_MARGIN_SECONDS = 5.0


async def stop_workers(
    workers: Sequence[Worker], shutdown_grace_seconds: float, *, admitted: bool = True
) -> int:
    """SIGTERM to `workers`, then SIGKILL to any still running after the grace period (their
    own `shutdown_grace_seconds` and a margin); how many stopped uncleanly. Workers not
    `admitted` (an upgrade rolled back) failed already, and said why: how they end is no
    unclean stop of the node."""
    running = [w.process for w in workers if w.process and w.process.returncode is None]
    # A worker still starting has served nothing; SIGTERM before its handlers exist ends
    # it by the signal itself, which is a clean stop for it.
    starting = {w.process.pid for w in workers if w.process and not w.ready}
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    grace = shutdown_grace_seconds + STOP_MARGIN_SECONDS
    waits = [asyncio.create_task(process.wait()) for process in running]
    if waits:
        await asyncio.wait(waits, timeout=grace)
        for process in running:
            if process.returncode is None:
                log.error("worker pid %d did not stop in %.0f s: killed", process.pid, grace)
                process.kill()
        await asyncio.gather(*waits, return_exceptions=True)
    unclean = 0
    for process in running:
        stopped_starting = process.pid in starting and process.returncode == -signal.SIGTERM
        if process.returncode != 0 and not stopped_starting and admitted:
            unclean += 1
            log.error("worker pid %d stopped with exit status %s", process.pid, process.returncode)
    return unclean
