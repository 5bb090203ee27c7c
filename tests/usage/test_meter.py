"""Metering: one durable usage event per served billable request, never for refusals or errors."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import pytest

from edge_node.cli.daemon import queue_directory
from edge_node.errors import StorageUnavailable
from edge_node.ids import EventIdGenerator
from edge_node.queue import tail_records
from edge_node.usage.event import UsageEvent
from edge_node.usage.meter import EVENT_RESERVATION_BYTES, queue_settings
from edge_node.usage.served import counts_path, read_counts
from tests.conftest import NodeFactory
from tests.support import RunningNode


def events_on_disk(node: RunningNode) -> list[UsageEvent]:
    """Usage events as another process would find them in the queue directory.

    Filler records some tests append to fill the queue are not JSON and are skipped.
    """
    records = tail_records(queue_directory(node.config), 1_000_000)
    return [UsageEvent.decode(r.payload) for r in records if r.payload.startswith(b"{")]


async def post(
    node: RunningNode,
    tenant_id: str,
    headers: dict[str, str],
    body: dict,
    request_id: str | None = None,
) -> int:
    headers = {**headers, **({"X-Request-Id": request_id} if request_id else {})}
    async with node.session.post(
        node.tenant_url(tenant_id, "/ratings"), json=body, headers=headers
    ) as response:
        await response.read()
        return response.status


class TestUsageEvents:
    async def test_each_served_request_bills_its_operation_once(self, node: RunningNode) -> None:
        """Create, update, list, score, delete and erase each append one event with its units."""
        tenant = node.create_tenant()
        body = {"user_id": "u1", "item_id": "i1", "score": 3}
        assert await post(node, tenant.tenant_id, tenant.headers, body, "req-create") == 201
        assert await post(node, tenant.tenant_id, tenant.headers, body, "req-update") == 200
        url = node.tenant_url(tenant.tenant_id)
        for method, path, request_id in [
            ("GET", "/ratings", "req-list"),
            ("GET", "/items/i1/score", "req-score"),
            ("DELETE", "/users/u1", "req-erase"),
        ]:
            async with node.session.request(
                method, url + path, headers={**tenant.headers, "X-Request-Id": request_id}
            ) as response:
                assert response.status == 200
                assert response.headers["X-Request-Id"] == request_id
        events = events_on_disk(node)
        assert [(e.request_id, e.operation, e.status, e.units) for e in events] == [
            ("req-create", "rating.create", 201, 1),
            ("req-update", "rating.update", 200, 1),
            ("req-list", "rating.list", 200, 1),
            ("req-score", "score.read", 200, 1),
            ("req-erase", "user.erase", 200, 1),
        ]
        assert {(e.tenant_id, e.node_id) for e in events} == {(tenant.tenant_id, "test-node")}
        assert len({e.event_id for e in events}) == 5
        assert [e.event_id for e in events] == sorted(e.event_id for e in events)

    async def test_refused_and_failed_requests_never_bill(self, make_node: NodeFactory) -> None:
        """400, 401, 403, 404 and 429 answers append nothing to the queue."""
        node = await make_node()
        tenant = node.create_tenant(rate_limit=2)
        other = node.create_tenant("other")
        await post(node, tenant.tenant_id, tenant.headers, {"score": 9})  # 400
        await post(node, tenant.tenant_id, {"X-API-Key": "enk_nope"}, {})  # 401
        await post(
            node, other.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 1}
        )  # 403
        async with node.session.delete(
            node.tenant_url(tenant.tenant_id, f"/ratings/{uuid.uuid4()}"), headers=tenant.headers
        ) as response:
            assert response.status == 404
        async with node.session.get(
            node.tenant_url(tenant.tenant_id, "/ratings"), headers=tenant.headers
        ) as response:
            assert response.status == 429
        assert events_on_disk(node) == []

    async def test_units_come_from_configuration(self, make_node: NodeFactory) -> None:
        """An operation configured at 0 units is free; another bills its configured units."""
        node = await make_node(**{"meter.units.score_read": 0, "meter.units.rating_create": 5})
        tenant = node.create_tenant()
        await post(
            node, tenant.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 2}
        )
        async with node.session.get(
            node.tenant_url(tenant.tenant_id, "/items/i/score"), headers=tenant.headers
        ) as response:
            assert response.status == 200
        assert [(e.operation, e.units) for e in events_on_disk(node)] == [("rating.create", 5)]

    async def test_metering_off_writes_no_queue(self, make_node: NodeFactory) -> None:
        """With meter.enabled = false requests are served and no queue directory exists."""
        node = await make_node(**{"meter.enabled": False})
        tenant = node.create_tenant()
        assert (
            await post(
                node, tenant.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 2}
            )
            == 201
        )
        assert not queue_directory(node.config).exists()


class SlowFsync:
    """An fsync that takes `delay` seconds, recording when each one finished."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.finished: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        time.sleep(self.delay)
        os.fsync(fd)
        with self._lock:
            self.finished.append(time.monotonic())


class TestDurability:
    async def test_strict_answers_only_after_the_event_is_synced(
        self, make_node: NodeFactory
    ) -> None:
        """In strict mode the response leaves after the fsync covering its event completed."""
        fsync = SlowFsync(0.2)
        node = await make_node(fsync=fsync, **{"meter.durability": "strict"})
        tenant = node.create_tenant()
        started = time.monotonic()
        assert (
            await post(
                node, tenant.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 4}
            )
            == 201
        )
        answered = time.monotonic()
        assert answered - started >= 0.2
        assert any(started < done <= answered for done in fsync.finished)

    async def test_batched_answers_before_the_sync(self, make_node: NodeFactory) -> None:
        """In batched mode the response does not wait for the fsync of its event."""
        fsync = SlowFsync(0.5)
        node = await make_node(fsync=fsync, **{"meter.durability": "batched"})
        tenant = node.create_tenant()
        started = time.monotonic()
        assert (
            await post(
                node, tenant.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 4}
            )
            == 201
        )
        assert time.monotonic() - started < 0.4
        await node.meter.queue.flush()  # type: ignore[union-attr]
        assert len(events_on_disk(node)) == 1

    async def test_batched_gathers_events_before_each_group_commit(
        self, make_node: NodeFactory
    ) -> None:
        """In batched durability a group commit gathers events for
        meter.batched_commit_interval_ms (here 300 ms) before its fsync: an event recorded is
        not on disk 100 ms later, and is once the commit has run. Strict durability does not
        wait: nobody would be answered meanwhile."""
        node = await make_node(
            **{"meter.durability": "batched", "meter.batched_commit_interval_ms": 300}
        )
        tenant = node.create_tenant()
        queue = node.meter.queue
        assert queue is not None
        assert queue.settings.commit_interval == 0.3
        assert await node.meter.record(tenant.tenant_id, "score.read", 200, "r")
        await asyncio.sleep(0.1)
        assert events_on_disk(node) == []
        await queue.flush()
        assert len(events_on_disk(node)) == 1
        assert queue_settings(node.config.queue, node.config.meter).commit_interval == 0.3
        assert queue_settings(node.config.queue).commit_interval == 0  # strict: no wait
        longer = replace(node.config.queue, commit_interval_ms=500)
        assert queue_settings(longer, node.config.meter).commit_interval == 0.5

    async def test_batched_counts_served_once_durable_and_spent_at_once(
        self, make_node: NodeFactory
    ) -> None:
        """A batched event is counted spent as it is recorded (an allowance is never passed
        while it waits), and served only once its group commit is durable, with the other
        events of that commit: a served count never exceeds what the queue holds."""
        fsync = SlowFsync(0.3)
        node = await make_node(fsync=fsync, **{"meter.durability": "batched"})
        tenant = node.create_tenant()
        meter = node.meter
        assert meter.spend is not None
        assert meter.served is not None
        for n in range(3):
            assert await meter.record(tenant.tenant_id, "score.read", 200, f"r{n}")
        assert meter.spend.spent(tenant.tenant_id) == 3
        meter.served.sync()
        assert read_counts(meter.served.path) == []  # nothing durable yet
        await meter.queue.flush()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)  # the commit's callbacks
        meter.served.sync()
        assert [
            (tenant_id, events) for tenant_id, _, events, _ in read_counts(meter.served.path)
        ] == [(tenant.tenant_id, 3)]
        assert meter.spend.spent(tenant.tenant_id) == 3  # not spent twice

    @pytest.mark.parametrize("durability", ["strict", "batched"])
    async def test_events_that_cannot_be_appended_are_refused_at_once(
        self, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, durability: str
    ) -> None:
        """Any failure to append events (not only the queue's own errors) answers each of
        their requests 503 usage-not-recorded at once, in either durability: never a 500,
        and in strict never a wait for the bound that ends in usage-pending."""

        def broken(**_: object) -> bytes:
            raise ValueError("cannot encode")

        node = await make_node(**{"meter.durability": durability})
        tenant = node.create_tenant()
        monkeypatch.setattr("edge_node.usage.meter.encode_event", broken)
        outcomes = await asyncio.gather(
            *(node.meter.record(tenant.tenant_id, "score.read", 200, f"r{n}") for n in range(2)),
            return_exceptions=True,
        )
        # Not usage-pending (the bound waited out, strict) nor a ValueError (a 500, batched).
        assert [getattr(o, "slug", o) for o in outcomes] == ["usage-not-recorded"] * 2


async def fill_queue(node: RunningNode) -> None:
    """Append filler records until less than one reservation of room is left."""
    queue = node.meter.queue
    assert queue is not None
    chunk = b"x" * 60_000
    while queue.free_bytes() > 70_000:
        await queue.append(chunk)
    while queue.free_bytes() >= EVENT_RESERVATION_BYTES:
        await queue.append(b"y" * 200)


QUEUE_SMALL = {"queue.max_bytes": 1 << 20, "queue.segment_bytes": 256 << 10}


class TestQueueFull:
    async def test_reject_refuses_before_doing_anything(self, make_node: NodeFactory) -> None:
        """A full queue answers 503 with Retry-After and the rating is not written."""
        node = await make_node(**QUEUE_SMALL)
        tenant = node.create_tenant()
        await fill_queue(node)
        async with node.session.post(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers=tenant.headers,
            json={"user_id": "u", "item_id": "i", "score": 4},
        ) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "30"
            problem = await response.json()
        assert problem["type"] == "urn:edge-node:problem:usage-queue-full"
        async with node.session.get(
            node.tenant_url(tenant.tenant_id, "/ratings"), headers=tenant.headers
        ) as response:
            assert response.status == 503
        assert node.storage.stores.get(tenant.tenant_id).page().ratings == []
        assert node.meter.stats.rejected_full == 2

    async def test_serve_unmetered_serves_and_counts(self, make_node: NodeFactory) -> None:
        """With on_full = serve_unmetered the request is served, not billed, and counted."""
        node = await make_node(**QUEUE_SMALL, **{"meter.on_full": "serve_unmetered"})
        tenant = node.create_tenant()
        await fill_queue(node)
        before = len(events_on_disk(node))
        assert (
            await post(
                node, tenant.tenant_id, tenant.headers, {"user_id": "u", "item_id": "i", "score": 4}
            )
            == 201
        )
        assert node.meter.stats.unmetered == 1
        assert len(events_on_disk(node)) == before

    async def test_concurrent_requests_never_overrun_the_bound(
        self, make_node: NodeFactory
    ) -> None:
        """Requests admitted together each hold room, so none is served and then left unbilled."""
        node = await make_node(**QUEUE_SMALL)
        tenant = node.create_tenant()
        queue = node.meter.queue
        assert queue is not None
        while queue.free_bytes() > 8 * EVENT_RESERVATION_BYTES:
            await queue.append(b"z" * 1000)
        statuses = await asyncio.gather(
            *[
                post(
                    node,
                    tenant.tenant_id,
                    tenant.headers,
                    {"user_id": f"u{i}", "item_id": "i", "score": 1},
                    f"r{i}",
                )
                for i in range(40)
            ]
        )
        served = {f"r{i}" for i, status in enumerate(statuses) if status == 201}
        assert served
        assert set(statuses) == {201, 503}
        billed = {event.request_id for event in events_on_disk(node)}
        assert billed == served
        assert node.meter.stats.failed == 0


class TestEventIds:
    def test_ids_are_uuid7_and_increase_within_a_millisecond(self) -> None:
        """Event ids are version-7 UUIDs, strictly increasing even within one millisecond."""
        generator = EventIdGenerator()
        ids = [generator.new(now_ms=1_700_000_000_000) for _ in range(5000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == 5000
        assert {uuid.UUID(i).version for i in ids} == {7}
        assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}
        assert uuid.UUID(ids[0]).int >> 80 == 1_700_000_000_000  # its millisecond leads it


class TestOperatorCommands:
    async def test_queue_status_and_tail(self, node: RunningNode) -> None:
        """`queue status` reports depth and oldest age; `queue tail -n` prints the newest events."""
        tenant = node.create_tenant()
        for i in range(3):
            await post(
                node,
                tenant.tenant_id,
                tenant.headers,
                {"user_id": f"u{i}", "item_id": "i", "score": 2},
                f"tail-{i}",
            )
        cli = [sys.executable, "-m", "edge_node.cli", "--data-dir", node.config.data_dir, "queue"]
        status = json.loads(
            subprocess.run([*cli, "status"], capture_output=True, text=True, check=True).stdout
        )
        assert status[0]["depth"] == 3
        assert status[0]["consumers"]["billing"]["depth"] == 3
        assert status[0]["consumers"]["billing"]["oldest_unconsumed_age_seconds"] >= 0
        tail = subprocess.run(
            [*cli, "tail", "-n", "2"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert [json.loads(line)["request_id"] for line in tail] == ["tail-1", "tail-2"]


class FailingFsync:
    """An fsync that starts failing with EIO once `broken` is set, like a dying disk."""

    def __init__(self) -> None:
        self.broken = False

    def __call__(self, fd: int) -> None:
        if self.broken:
            raise OSError(5, "Input/output error")
        os.fsync(fd)


class TestDiskFailure:
    async def test_a_failing_queue_refuses_before_writing_and_recovers_by_itself(
        self, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the queue cannot fsync: a request already carried out answers 503
        usage-pending, later billable requests are refused with 503 storage-unavailable before
        their write, and /readyz is 503; once syncing works the pending event is written once,
        /readyz is 200 and writes are served, without a restart."""
        monkeypatch.setattr("edge_node.usage.meter.USAGE_WAIT_SECONDS", 0.3)
        fsync = FailingFsync()
        node = await make_node(fsync=fsync)
        tenant = node.create_tenant()
        rating = {"user_id": "u", "item_id": "i", "score": 4}
        assert await post(node, tenant.tenant_id, tenant.headers, rating) == 201
        fsync.broken = True
        async with node.session.post(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers={**tenant.headers, "X-Request-Id": "pending-1"},
            json={**rating, "user_id": "u2"},
        ) as response:
            assert response.status == 503
            assert response.headers["Retry-After"]
            assert (await response.json())["type"].endswith(":usage-pending")
        # The writer's failed attempt runs on its own thread; a loaded machine may answer the
        # request above (after its bounded wait) before that attempt has failed.
        for _ in range(100):
            if node.meter.queue.write_failure is not None:
                break
            await asyncio.sleep(0.05)
        async with node.session.post(
            node.tenant_url(tenant.tenant_id, "/ratings"),
            headers=tenant.headers,
            json={**rating, "user_id": "u3"},
        ) as response:
            assert response.status == 503
            assert (await response.json())["type"].endswith(":storage-unavailable")
        stored = {r["user_id"] for r in node.storage.stores.get(tenant.tenant_id).page().ratings}
        assert stored == {"u", "u2"}
        async with node.session.get(f"{node.url}/readyz") as response:
            assert response.status == 503
            assert "usage queue cannot write" in (await response.json())["detail"]
        fsync.broken = False
        await node.meter.queue.flush()
        async with node.session.get(f"{node.url}/readyz") as response:
            assert response.status == 200
        assert (
            await post(node, tenant.tenant_id, tenant.headers, {**rating, "user_id": "u4"}) == 201
        )
        pending = [event for event in events_on_disk(node) if event.request_id == "pending-1"]
        assert [event.operation for event in pending] == ["rating.create"]
        assert node.meter.stats.rejected_storage == 1


class SlowOnceFsync:
    """An fsync that takes `delay` seconds once, when armed: a slow disk, not a failing one."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.armed = False

    def __call__(self, fd: int) -> None:
        if self.armed:
            self.armed = False
            time.sleep(self.delay)
        os.fsync(fd)


class TestSlowCommit:
    async def test_a_request_joining_a_commit_late_gets_a_wait_of_its_own(
        self, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A commit queued behind a slow fsync: a request that joined it early is answered
        `usage-pending` when its wait runs out, but one joining after that waits its own
        bound and, the commit landing within it, is recorded, not told to retry a request
        that was carried out."""
        monkeypatch.setattr("edge_node.usage.meter.USAGE_WAIT_SECONDS", 0.5)
        fsync = SlowOnceFsync(0.8)
        node = await make_node(fsync=fsync, **{"meter.durability": "strict"})
        tenant = node.create_tenant()

        async def record(request_id: str) -> str:
            try:
                await node.meter.record(tenant.tenant_id, "score.read", 200, request_id)
            except StorageUnavailable as problem:
                return problem.slug
            return "recorded"

        fsync.armed = True
        first = asyncio.create_task(record("slow-batch"))  # its fsync takes 0.8 s
        await asyncio.sleep(0.1)
        early = asyncio.create_task(record("early"))  # the next commit; waits until 0.6 s
        await asyncio.sleep(0.55)
        late = asyncio.create_task(record("late"))  # same commit, joins at 0.65 s
        assert await early == "usage-pending"
        assert await late == "recorded"
        assert await first == "usage-pending"


class TestStrictBatches:
    async def test_a_stop_in_the_turn_a_request_was_recorded_writes_its_event(
        self, make_node: NodeFactory
    ) -> None:
        """A strict event waits for the end of its turn of the loop to be appended with the
        others; a stop coming in that same turn appends it first, so the request is recorded
        and its event is on disk, not refused as unrecorded by a closing queue."""
        node = await make_node(**{"meter.durability": "strict"})
        tenant = node.create_tenant()
        recorded = asyncio.create_task(
            node.meter.record(tenant.tenant_id, "score.read", 200, "at-stop")
        )
        await asyncio.sleep(0)  # the request's event joins this turn's batch
        await node.meter.close()
        assert await recorded is True
        assert [e.request_id for e in events_on_disk(node)] == ["at-stop"]

    async def test_a_batch_that_ran_out_of_time_is_spent_at_once_and_only_once(
        self, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Events whose wait ran out (the disk failing) count against the allowance the
        moment their requests are answered usage-pending, and once written they are counted
        served without being spent a second time."""
        monkeypatch.setattr("edge_node.usage.meter.USAGE_WAIT_SECONDS", 0.3)
        fsync = FailingFsync()
        node = await make_node(fsync=fsync, **{"meter.durability": "strict"})
        tenant = node.create_tenant()
        spend = node.meter.spend
        assert spend is not None
        fsync.broken = True
        outcomes = await asyncio.gather(
            *(
                node.meter.record(tenant.tenant_id, "score.read", 200, f"pending-{n}")
                for n in range(3)
            ),
            return_exceptions=True,
        )
        assert [getattr(o, "slug", o) for o in outcomes] == ["usage-pending"] * 3
        assert spend.spent_now(tenant.tenant_id) == 3
        fsync.broken = False
        await node.meter.queue.flush()
        await asyncio.sleep(0.05)  # the commit's callbacks
        assert spend.spent_now(tenant.tenant_id) == 3
        served = read_counts(counts_path(queue_directory(node.config)))
        assert [(t, events, units) for t, _, events, units in served] == [(tenant.tenant_id, 3, 3)]

    async def test_serving_leaves_no_garbage_cycles_of_the_node(
        self, make_node: NodeFactory
    ) -> None:
        """Strict metering, the score and page memories and the rating writes make no
        reference cycles of the node's own objects: while serving, the cyclic garbage
        collector is held back (edge_node.http.collector), and garbage it then finds all at
        once stalls the loop for tens of milliseconds."""
        node = await make_node(**{"meter.durability": "strict"})
        tenant = node.create_tenant()
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for number in range(60):
                rating = {"user_id": f"u{number % 7}", "item_id": "i", "score": number % 5 + 1}
                assert await post(node, tenant.tenant_id, tenant.headers, rating) in (200, 201)
                for path in ("/items/i/score", "/ratings?item_id=i"):
                    url = node.tenant_url(tenant.tenant_id, path)
                    async with node.session.get(url, headers=tenant.headers) as response:
                        assert response.status == 200
            gc.collect()
            ours = [o for o in gc.garbage if type(o).__module__.startswith("edge_node")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert ours == []
