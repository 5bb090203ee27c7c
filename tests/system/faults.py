"""Fault schedules: each breaks the cluster for a bounded time and then puts everything right.

A schedule runs while the load runs, for `seconds`, and stops by itself: on the way out
(even when cancelled) every link is healed, every clock set right and every node serving
again. The faults come from outside the daemons, as in production:

- `kills`: SIGKILL a random node, restart it a moment later;
- `postgres`, `stripe`: one node's link cut off, slowed down, or losing answers mid-call;
- `partitions`: PostgreSQL and Stripe cut off together, for one node or all of them;
- `queue-full`: the small-queue node loses Stripe and gets a burst of requests until its
  usage queue is full and it answers 503 `usage-queue-full`;
- `clock`: a node's wall clock jumps forward, and is stepped back at the end;
- `clock-back`: a node's wall clock is stepped back, and forward again at the end;
- `disk-full`: the small-queue node's data directory (a tmpfs, when the run is root) is
  filled to the last byte under load, until it answers 503 `storage-unavailable`, and
  freed again;
- `mixed`: all of these at once.

After a SIGKILL, before the restart, the request ids on the dead node's queue settle the
requests it had in flight (tests/system/record.py).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.fault_proxy import TcpProxy
from tests.system.cluster import Cluster, EdgeDaemon
from tests.system.traffic import Traffic


@dataclass
class FaultContext:
    cluster: Cluster
    traffic: Traffic
    rng: random.Random
    clock_jump_seconds: float = 90.0
    counts: Counter[str] = field(default_factory=Counter)
    _busy: set[str] = field(default_factory=set)

    def idle_nodes(self) -> list[EdgeDaemon]:
        return [n for n in self.cluster.nodes if n.node_id not in self._busy]


Schedule = Callable[[FaultContext, float], Awaitable[None]]


async def _until(
    ctx: FaultContext, seconds: float, step: Callable[[float], Awaitable[None]]
) -> None:
    """Run `step(remaining)` again and again for `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (remaining := end - loop.time()) > 0.05:
        await step(remaining)


async def kill_and_restart(ctx: FaultContext, node: EdgeDaemon, down_for: float) -> None:
    ctx._busy.add(node.node_id)
    try:
        # Taken with no await before the SIGKILL: exactly the requests the process may have
        # had, even those whose broken connections are noticed while the queue is read.
        in_flight = ctx.traffic.seen.in_flight_to(node.node_id, node.incarnation)
        await node.kill()
        on_queue = await asyncio.to_thread(node.request_ids_on_queue)
        for request_id, doubt in in_flight.items():
            doubt.metered = request_id in on_queue
        ctx.counts["kills"] += 1
        await asyncio.sleep(down_for)
        await node.start()
    finally:
        ctx._busy.discard(node.node_id)


async def kills(ctx: FaultContext, seconds: float) -> None:
    """Two killers at once, so a node may die while another restarts; one stays up."""

    async def step(remaining: float) -> None:
        await asyncio.sleep(min(remaining, ctx.rng.uniform(0.2, 1.5)))
        candidates = [n for n in ctx.idle_nodes() if n.up]
        if sum(n.up for n in ctx.cluster.nodes) > 1 and candidates:
            await kill_and_restart(ctx, ctx.rng.choice(candidates), ctx.rng.uniform(0.1, 1.0))

    async with asyncio.TaskGroup() as killers:  # one failing stops the other
        for _ in range(2):
            killers.create_task(_until(ctx, seconds, step))


def _links(ctx: FaultContext, which: str) -> list[TcpProxy]:
    nodes = ctx.cluster.nodes
    chosen = nodes if ctx.rng.random() < 0.4 else [ctx.rng.choice(nodes)]
    if which == "postgres":
        return [n.postgres for n in chosen]
    if which == "stripe":
        return [n.stripe for n in chosen]
    return [n.postgres for n in chosen] + [n.stripe for n in chosen]


async def network_fault(ctx: FaultContext, which: str, seconds: float, kind: str) -> None:
    """One fault of `kind` (cut, slow, lossy) on some nodes' `which` links, then healed."""
    links = _links(ctx, which)
    ctx.counts[f"{which}-{kind}"] += 1
    for link in links:
        if kind == "cut":
            await link.cut()
        elif kind == "slow":
            link.slow(ctx.rng.uniform(0.05, 0.5))
        else:
            link.lossy(ctx.rng.uniform(0.05, 0.4))
    try:
        await asyncio.sleep(seconds)
    finally:
        for link in links:
            await link.heal()


def network(which: str, kinds: tuple[str, ...] = ("cut", "slow", "lossy")) -> Schedule:
    async def schedule(ctx: FaultContext, seconds: float) -> None:
        async def step(remaining: float) -> None:
            length = min(remaining, ctx.rng.uniform(1.0, 6.0))
            await network_fault(ctx, which, length, ctx.rng.choice(kinds))
            await asyncio.sleep(min(max(remaining - length, 0), ctx.rng.uniform(0.2, 2.0)))

        await _until(ctx, seconds, step)

    return schedule


QUEUE_FULL_SECONDS = 60.0  # at least this long to fill 1 MiB on a busy machine


async def queue_full(ctx: FaultContext, seconds: float) -> None:
    """Cut the small-queue node's Stripe and drive usage at it until it refuses with 503
    (or for max(seconds, 60 s))."""
    seconds = max(seconds, QUEUE_FULL_SECONDS)
    node = ctx.cluster.small_queue_node
    stop = asyncio.Event()
    before = ctx.traffic.seen.statuses["503 usage-queue-full"]
    await node.stripe.cut()
    ctx.counts["queue-full"] += 1
    filler = asyncio.create_task(ctx.traffic.fill_queue(node, stop, lanes=24))
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await asyncio.sleep(0.2)
            if ctx.traffic.seen.statuses["503 usage-queue-full"] - before >= 20:
                ctx.counts["queue-full-reached"] += 1
                break
    finally:
        stop.set()
        await filler
        await node.stripe.heal()


async def clock(ctx: FaultContext, seconds: float) -> None:
    """A node's clock jumps forward (within the 5 minutes Stripe accepts meter events from
    the future), and is stepped back at the end."""
    node = ctx.rng.choice(ctx.cluster.nodes)
    await asyncio.sleep(ctx.rng.uniform(0, seconds / 4))
    node.set_clock_offset(node.clock_offset + ctx.clock_jump_seconds)
    ctx.counts["clock-jumps"] += 1
    try:
        await asyncio.sleep(seconds * 3 / 4)
    finally:
        node.set_clock_offset(0.0)


async def clock_back(ctx: FaultContext, seconds: float) -> None:
    """A node's wall clock is stepped back (its clock ignores it: ratings and usage keep
    their order), and forward to the right time at the end."""
    node = ctx.rng.choice(ctx.cluster.nodes)
    await asyncio.sleep(ctx.rng.uniform(0, seconds / 4))
    node.set_clock_offset(node.clock_offset - ctx.clock_jump_seconds)
    ctx.counts["clock-steps-back"] += 1
    try:
        await asyncio.sleep(seconds * 3 / 4)
    finally:
        node.set_clock_offset(0.0)


DISK_FULL_SECONDS = 30.0  # long enough to see refusals and recovery on a busy machine


async def disk_full(ctx: FaultContext, seconds: float) -> None:
    """Fill the small-queue node's data directory until it refuses with 503
    `storage-unavailable` (for at most max(seconds, 30 s)), hold it full a moment, free it."""
    node = ctx.cluster.small_queue_node
    if not node.small_disk:
        print("disk-full: skipped: the small node's data directory is no tmpfs (needs root)")
        ctx.counts["disk-full-skipped"] += 1
        return
    seconds = max(seconds, DISK_FULL_SECONDS)
    ballast = node.data_dir / "ballast"
    before = ctx.traffic.seen.statuses["503 storage-unavailable"]
    ctx.counts["disk-full"] += 1
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await asyncio.to_thread(_fill, ballast)
            await asyncio.sleep(0.2)
            if ctx.traffic.seen.statuses["503 storage-unavailable"] - before >= 5:
                ctx.counts["disk-full-reached"] += 1
                await asyncio.sleep(min(2.0, max(end - loop.time(), 0)))
                break
    finally:
        await asyncio.to_thread(ballast.unlink, missing_ok=True)


def _fill(path: Path) -> None:
    """Append to `path` until the filesystem refuses a single 4 KiB block."""
    block = b"\0" * (1 << 20)
    with path.open("ab", buffering=0) as ballast:
        size = len(block)
        while size >= 4096:
            try:
                ballast.write(block[:size])
            except OSError:
                size //= 2


async def mixed(ctx: FaultContext, seconds: float) -> None:
    parts = (kills, network("postgres"), network("stripe"), network("both", ("cut",)), clock)
    async with asyncio.TaskGroup() as faults:  # one failing stops the others
        for part in parts:
            faults.create_task(part(ctx, seconds))


SCHEDULES: dict[str, Schedule] = {
    "kills": kills,
    "postgres": network("postgres"),
    "stripe": network("stripe"),
    "partitions": network("both", ("cut",)),
    "queue-full": queue_full,
    "clock": clock,
    "clock-back": clock_back,
    "disk-full": disk_full,
    "mixed": mixed,
}


async def run_schedule(ctx: FaultContext, name: str, seconds: float) -> None:
    """Run one schedule for `seconds`, then heal everything and restart any node that is
    down, whatever happened."""
    try:
        await SCHEDULES[name](ctx, seconds)
    finally:
        await ctx.cluster.heal()
        for node in ctx.cluster.nodes:
            if not node.up:
                await node.start()
