"""The sync worker: backoff with jitter, retrying by itself until PostgreSQL answers again,
statement timeouts, independent shards, a prompt stop, and the status it reports."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import urllib.parse
from collections.abc import Callable

import orjson

from edge_node.clock import now_us
from sync.backoff import Backoff
from sync.postgres import Connection, connect
from sync.shards import shard_for
from sync.status import ShardStatus, read_status_file
from sync.worker import SyncWorker
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.postgres import free_port
from tests.sync.conftest import EdgeFactory
from tests.sync.support import Edge, TcpProxy, central_rows

FAST = Backoff(initial=0.05, maximum=0.2)


async def wait_until(
    worker: SyncWorker, check: Callable[[list[ShardStatus]], bool], within: float = 15
) -> list[ShardStatus]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = worker.status()
        if check(status):
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not reached; status: {worker.status()}")


def new_tenant(edge: Edge, ratings: int = 3, *, shard: int = 0, shards: int = 1) -> str:
    """A tenant on `edge` (mapped to `shard` of `shards`) with `ratings` local ratings."""
    while True:
        tenant, _ = edge.registry.create_tenant("acme")
        if shard_for(tenant.tenant_id, shards) == shard:
            break
    for i in range(ratings):
        edge.rate(tenant.tenant_id, f"u{i}", "book", 1 + i % 5)
    return tenant.tenant_id


class TestBackoff:
    def test_delays_double_up_to_the_cap_with_jitter(self) -> None:
        """The n-th failure waits between half and all of min(30, 0.5 * 2**(n-1)) seconds,
        and the waits vary."""
        backoff = Backoff(0.5, 30.0, random.Random(7))
        for failures in range(1, 12):
            ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
            delays = [backoff.delay(failures) for _ in range(50)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays), failures
            assert len(set(delays)) > 1
        assert backoff.delay(10**6) <= 30.0


class TestRetries:
    async def test_a_closed_port_is_retried_until_it_answers_then_sync_resumes(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """With PostgreSQL unreachable the worker fails, backs off, reports the error and the
        outbox lag; when the port starts answering it uploads the backlog by itself, with no
        new local write."""
        a = make_edge("edge-a")
        t = new_tenant(a)
        proxy = TcpProxy(urllib.parse.urlsplit(central).port or 0, free_port())
        worker = a.worker([proxy.dsn(central)], backoff=FAST)
        worker.start()
        try:
            [status] = await wait_until(worker, lambda s: s[0].consecutive_failures >= 3)
            assert status.state == "retrying"
            assert status.last_success_at is None
            assert status.last_error is not None
            assert "cannot connect" in status.last_error
            assert status.pending_tenants == 1
            assert status.oldest_pending_at is not None
            assert status.next_attempt_at is not None
            assert status.last_attempt_at is not None
            assert status.next_attempt_at - status.last_attempt_at >= 0.05e6 - 1000

            await proxy.heal()
            [status] = await wait_until(
                worker, lambda s: s[0].state == "ok" and s[0].pending_tenants == 0
            )
            assert status.consecutive_failures == 0
            assert status.uploaded_rows == 3
            assert a.rows(t) == await central_rows(db, t)
        finally:
            await worker.stop()
            await proxy.cut()

    async def test_a_statement_that_hangs_times_out_and_is_retried(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A slow server (the ratings table locked by someone else) makes the upload time out;
        the worker reports it and retries, and uploads once the lock is gone."""
        a = make_edge("edge-a")
        t = new_tenant(a)
        locker = await connect(central)
        try:
            hold = locker.transaction()
            await hold.start()
            await locker.execute("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE")
            worker = a.worker([central], backoff=FAST, statement_timeout=0.3)
            worker.start()
            try:
                [status] = await wait_until(worker, lambda s: s[0].consecutive_failures >= 2)
                assert status.last_error is not None
                assert "timed out" in status.last_error
                await hold.rollback()
                await wait_until(worker, lambda s: s[0].state == "ok" and s[0].pending_tenants == 0)
            finally:
                await worker.stop()
        finally:
            await locker.close()
        assert a.rows(t) == await central_rows(db, t)

    async def test_a_shard_that_is_down_does_not_hold_back_the_other(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Shard 1 unreachable, shard 0 up: the tenants of shard 0 sync while shard 1 retries."""
        a = make_edge("edge-a")
        on_0 = new_tenant(a, shard=0, shards=2)
        new_tenant(a, shard=1, shards=2)
        closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        worker = a.worker([central, closed], backoff=FAST)
        worker.start()
        try:
            up, down = await wait_until(
                worker, lambda s: s[0].state == "ok" and s[1].consecutive_failures >= 2
            )
        finally:
            await worker.stop()
        assert a.rows(on_0) == await central_rows(db, on_0)
        assert (up.pending_tenants, down.pending_tenants) == (0, 1)
        assert down.state == "retrying"


class TestStopAndStatus:
    async def test_stop_is_prompt_while_backing_off(self, make_edge: EdgeFactory) -> None:
        """A worker waiting 30 s before its next attempt stops at once, and its status file
        says it stopped and why it was failing."""
        a = make_edge("edge-a")
        worker = a.worker(
            [f"postgresql://postgres:secret@127.0.0.1:{free_port()}/x"],
            backoff=Backoff(30.0, 30.0),
        )
        worker.start()
        await wait_until(worker, lambda s: s[0].consecutive_failures >= 1)
        started = time.monotonic()
        await worker.stop()
        assert time.monotonic() - started < 1.0
        document = read_status_file(a.data_dir)
        assert document is not None
        [shard] = document["shards"]
        assert shard["state"] == "stopped"
        assert "cannot connect" in shard["last_error"]
        assert "secret" not in orjson.dumps(document).decode()

    async def test_sync_status_prints_what_the_worker_reported(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """`edge-node sync status` prints the status the worker wrote: per shard the state,
        last success, failures and lag; with no status file it exits 1 and says why."""
        a = make_edge("edge-a")
        new_tenant(a)
        command = [*edge_node_command(), "--data-dir", str(a.data_dir), "sync", "status"]
        missing = subprocess.run(
            command, capture_output=True, text=True, env=clean_environment(), check=False
        )
        assert missing.returncode == 1
        assert "no sync status" in missing.stderr

        worker = a.worker([central])
        worker.start()
        try:
            await wait_until(worker, lambda s: s[0].state == "ok")
        finally:
            await worker.stop()
        done = subprocess.run(
            command, capture_output=True, text=True, env=clean_environment(), check=False
        )
        assert done.returncode == 0, done.stderr
        document = orjson.loads(done.stdout)
        [shard] = document["shards"]
        assert document["node_id"] == "edge-a"
        assert shard["dsn"] == central
        assert shard["state"] == "stopped"
        assert shard["last_success_at"] is not None
        assert shard["consecutive_failures"] == 0
        assert shard["uploaded_rows"] == 3
        assert shard["pending_tenants"] == 0
        assert shard["oldest_pending_age_seconds"] is None

    def test_lag_is_reported_as_the_age_of_the_oldest_waiting_row(self) -> None:
        """The status document turns the oldest pending write time into an age in seconds."""
        status = ShardStatus(0, "postgresql://x", oldest_pending_at=now_us() - 2_500_000)
        age = status.to_json(now_us())["oldest_pending_age_seconds"]
        assert 2.4 < age < 3.0


async def test_a_round_cancelled_mid_upload_leaves_the_outbox_whole(
    make_edge: EdgeFactory, central: str, db: Connection
) -> None:
    """Stopping without grace while a round is half-way through the backlog cancels it; every
    row not committed is still in the outbox, and the next worker uploads them all, once."""
    a = make_edge("edge-a")
    t = new_tenant(a, ratings=3000)
    worker = a.worker([central], batch_size=100)
    worker.start()
    uploaded = 0
    while not 0 < uploaded < 3000:
        await asyncio.sleep(0.002)
        uploaded = await db.fetchval("SELECT count(*) FROM ratings")
    await worker.stop(grace=0)
    assert len(a.pending(t)) <= 3000 - uploaded + 100  # at most one batch unacknowledged
    second = a.worker([central], batch_size=100)
    await second.run_once()
    await second.stop()
    assert a.pending(t) == []
    assert a.rows(t) == await central_rows(db, t)
