"""Upgrading the serving workers without a restart, and rolling back when the new ones fail.

On SIGUSR2 (`edge-node upgrade`, `systemctl kill -s USR2 --kill-whom=main edge-node`) the
supervisor starts a new generation of workers: new interpreters, so they load the code
installed now, on the node's listening sockets, each in a queue directory of the other bank
(generations.py). Each worker serves only once its own `/readyz` answers 200
(health_socket.py). Once every new worker is ready and stays ready for the probation period
(`workers.upgrade_probation_seconds`: the supervisor asks each one's `/readyz` all along),
the old generation is drained and stopped as on SIGTERM: it stops accepting, its in-flight
requests finish, its queue is committed. Both generations accept from the same sockets
meanwhile, so no connection is refused and none waits on a worker that is leaving.

If a new worker is not ready within `workers.upgrade_timeout_seconds`, exits, or fails its
readiness while on probation, the new generation is stopped and the old one, which never
stopped accepting, goes on serving: a rollback, logged, written to the upgrade record
(`edge-node status`, upgrade_record.py) and counted in `edge_node_upgrades_total`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from edge_node.cli.generations import Generation
from edge_node.cli.health_socket import probe_readiness
from edge_node.cli.upgrade_record import COMPLETED, ROLLED_BACK, UpgradeFile, UpgradeRecord
from edge_node.config import WorkersConfig

log = logging.getLogger(__name__)

READY_POLL_SECONDS = 0.05
PROBATION_PROBE_SECONDS = 0.25


class Upgrader:
    """Replaces a generation of workers by a new one, or keeps it when the new one fails.

    `start(number)` starts generation `number` on probation; `retire(generation)` stops it
    (draining) and returns once its workers are gone; `status(text)` tells the service
    manager.
    """

    def __init__(
        self,
        settings: WorkersConfig,
        data_dir: Path,
        *,
        start: Callable[[int], Generation],
        retire: Callable[[Generation], Awaitable[None]],
        status: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._file = UpgradeFile(data_dir)
        self._start = start
        self._retire = retire
        self._status = status

    async def run(self, requested: asyncio.Event, serving: Callable[[], Generation]) -> None:
        """Upgrade the `serving()` generation each time `requested` is set, one at a time
        (a request made while one is under way is not queued: its sender was told)."""
        while True:
            await requested.wait()
            await self.upgrade(serving())
            requested.clear()

    async def upgrade(self, current: Generation) -> Generation:
        """The generation serving afterwards: a new one, or `current` after a rollback."""
        record = self._file.start(current.number, current.number + 1)
        log.info("upgrade: starting generation %d of the workers", record.to_generation)
        self._status(f"upgrading: starting generation {record.to_generation}")
        new = self._start(record.to_generation)
        try:
            failure = await self._admit(new)
        except BaseException:
            await self._retire(new)  # stopped while upgrading: the new ones go too
            raise
        record = replace(record, to_version=", ".join(new.versions) or None)
        if failure is not None:
            return await self._roll_back(current, new, record, failure)
        new.on_probation = False
        await self._retire(current)
        self._file.write(record.finish(COMPLETED))
        log.info(
            "upgrade: generation %d (edge-node %s) serves; generation %d stopped",
            new.number,
            record.to_version,
            current.number,
        )
        self._status(f"upgraded to generation {new.number} (edge-node {record.to_version})")
        return new

    async def _roll_back(
        self, current: Generation, new: Generation, record: UpgradeRecord, failure: str
    ) -> Generation:
        log.error(
            "upgrade rolled back: generation %d failed (%s); generation %d (edge-node %s) keeps"
            " serving",
            new.number,
            failure,
            current.number,
            record.from_version,
        )
        await self._retire(new)
        self._file.write(record.finish(ROLLED_BACK, reason=failure))
        self._status(f"upgrade rolled back: {failure}")
        return current

    async def _admit(self, new: Generation) -> str | None:
        """None once every new worker is ready and stayed ready through probation, else why
        the new generation fails."""
        loop = asyncio.get_running_loop()
        timeout = self._settings.upgrade_timeout_seconds
        deadline = loop.time() + timeout
        while not new.ready:
            if new.failure is not None:
                return new.failure
            if loop.time() >= deadline:
                waiting = [str(w.index) for w in new.workers if not w.ready]
                return f"worker(s) {', '.join(waiting)} not ready within {timeout:g} s"
            await asyncio.sleep(READY_POLL_SECONDS)
        end = loop.time() + self._settings.upgrade_probation_seconds
        while True:
            if new.failure is not None:
                return new.failure
            problems = await asyncio.gather(*(probe_readiness(w.health_name) for w in new.workers))
            for worker, problem in zip(new.workers, problems, strict=True):
                if problem is not None:
                    return f"worker {worker.index} failed readiness on probation: {problem}"
            if loop.time() >= end:
                return None
            await asyncio.sleep(PROBATION_PROBE_SECONDS)
