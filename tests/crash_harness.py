"""Crash rounds against the real daemon: load it over HTTP, SIGKILL it, check what survived.

A `CrashRun` owns one data directory. Each round starts `edge-node serve` on it as a user
would (default, strict durability), drives concurrent rating writes and score reads with
unique X-Request-Ids, SIGKILLs the daemon at a random moment under load, and then, with the
daemon dead, reads the usage queue and the tenant's SQLite file from outside and checks them
against the `Ledger` of everything the client sent and was told, across all rounds so far.
`find_violations` is that check, a pure function so that it can itself be tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import aiohttp
import orjson

from edge_node.errors import NotAUsageEvent
from edge_node.queue import Record, inspect_queue, tail_records
from edge_node.usage.event import UsageEvent

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(rb"^edge-node listening on http://127\.0\.0\.1:(\d+) ")
ITEMS = 64  # shared item ids, so score reads and the per-item aggregates see many writers
Kind = Literal["create", "update", "score", "refused"]
Key = tuple[str, str]
EMPTY_DIGEST = hashlib.sha256(b"").digest()
# What an acknowledged request must have been billed as, by kind and response status.
BILLED_AS = {
    ("create", 201): "rating.create",
    ("update", 201): "rating.create",
    ("create", 200): "rating.update",
    ("update", 200): "rating.update",
    ("score", 200): "score.read",
}


class HarnessError(Exception):
    """The daemon could not be run as the round needs (it did not start, or died by itself)."""


@dataclass(slots=True)
class Outcome:
    """One request sent under load, and what the client saw of it (status None: no answer)."""

    request_id: str
    kind: Kind
    key: Key  # (user_id, item_id); user_id is "" for score reads
    score: int | None = None  # the score a write sent
    status: int | None = None  # status of a complete response
    acknowledged_score: int | None = None  # the score a 2xx write response said it stored

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """Sent invalid (refused whether or not the answer arrived), or answered 4xx."""
        return self.kind == "refused" or (self.status is not None and 400 <= self.status < 500)


@dataclass(slots=True)
class Ledger:
    """Every request sent across rounds, and each key's writes in the order they were sent.

    Writes to one key are never in flight together, so send order is the order they apply.
    """

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    writes: dict[Key, list[Outcome]] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.request_id] = outcome
        if outcome.kind in ("create", "update"):
            self.writes.setdefault(outcome.key, []).append(outcome)


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken promise: what kind, about which request or key, and the evidence."""

    kind: str
    subject: str
    evidence: str


@dataclass(frozen=True, slots=True)
class StoredRating:
    score: int
    deleted: bool


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """A record read from the queue: its sequence number and the usage event it holds."""

    seq: int
    event: UsageEvent | None  # None: the payload is not a usage event

    @classmethod
    def decode(cls, record: Record) -> QueuedEvent:
        try:
            return cls(record.seq, UsageEvent.decode(record.payload))
        except NotAUsageEvent:
            return cls(record.seq, None)


@dataclass(slots=True)
class Observed:
    """What the dead daemon left on disk: queued events, ratings, and aggregate mismatches."""

    queued: list[QueuedEvent]
    ratings: dict[Key, StoredRating]
    aggregate_mismatches: list[str] = field(default_factory=list)


def find_violations(ledger: Ledger, observed: Observed, tenant_id: str) -> list[Violation]:
    """Every way the disk contradicts what the client was told."""
    events = [queued.event for queued in observed.queued if queued.event is not None]
    return [
        *_sequence_violations(observed.queued),
        *(
            Violation("undecodable-event", f"seq {queued.seq}", "not a usage event")
            for queued in observed.queued
            if queued.event is None
        ),
        *_billing_violations(ledger, events, tenant_id),
        *_rating_violations(ledger, observed.ratings),
        *(
            Violation("aggregate-drift", item, "item_scores disagrees with its ratings")
            for item in observed.aggregate_mismatches
        ),
    ]


def _sequence_violations(queued: list[QueuedEvent]) -> Iterable[Violation]:
    """Nothing consumes the queue here, so it must hold records 1..N with no gap."""
    for expected, record in enumerate(queued, start=1):
        if record.seq != expected:
            yield Violation("queue-gap", f"seq {expected}", f"next readable record is {record.seq}")
            return


def _billing_violations(
    ledger: Ledger, events: list[UsageEvent], tenant_id: str
) -> Iterable[Violation]:
    by_request: dict[str, list[UsageEvent]] = {}
    for event in events:
        by_request.setdefault(event.request_id, []).append(event)
    for request_id, billed in by_request.items():
        outcome = ledger.outcomes.get(request_id)
        if len(billed) > 1:
            yield Violation("doubled", request_id, f"{len(billed)} events: {billed}")
        if outcome is None:
            yield Violation("unknown-request", request_id, f"never sent, billed {billed[0]}")
        elif outcome.refused:
            yield Violation("billed-refusal", request_id, f"{outcome} billed {billed[0]}")
    for outcome in ledger.outcomes.values():
        if outcome.acknowledged:
            billed = by_request.get(outcome.request_id, [])
            if not billed:
                yield Violation("lost", outcome.request_id, f"acknowledged {outcome}, no event")
            elif (problem := _mismatch(outcome, billed[0], tenant_id)) is not None:
                yield Violation("wrong-event", outcome.request_id, problem)


def _mismatch(outcome: Outcome, event: UsageEvent, tenant_id: str) -> str | None:
    expected = BILLED_AS.get((outcome.kind, outcome.status or 0))
    if (event.tenant_id, event.operation, event.status) != (tenant_id, expected, outcome.status):
        return f"{outcome} billed as {event}"
    return None if event.units > 0 else f"{outcome} billed {event.units} units"


def _rating_violations(ledger: Ledger, ratings: Mapping[Key, StoredRating]) -> Iterable[Violation]:
    """An acknowledged write holds unless a later write to its key replaced it."""
    for key, writes in ledger.writes.items():
        stored = ratings.get(key)
        acked = [i for i, write in enumerate(writes) if write.acknowledged]
        if not acked:  # never acknowledged: absent, or one of the scores that were sent
            allowed = {write.score for write in writes}
            if stored is not None and (stored.deleted or stored.score not in allowed):
                yield Violation("rating-not-sent", repr(key), f"{stored}, sent {allowed}")
            continue
        last = writes[acked[-1]]
        allowed = {last.acknowledged_score, *(write.score for write in writes[acked[-1] + 1 :])}
        if stored is None or stored.deleted or stored.score not in allowed:
            yield Violation("rating-lost", repr(key), f"stored {stored}, acknowledged {last}")
    for key in ratings.keys() - ledger.writes.keys():
        yield Violation("rating-not-sent", repr(key), f"stored {ratings[key]}, never written")


class QueueReader:
    """Reads a dead daemon's queue directory round after round, changing nothing in it.

    Re-reading every record each round would make a long run quadratic. So each read hashes
    every segment file: if every byte seen last time is still there, only the records
    appended since are read; if any changed or vanished, everything is read again. Either
    way the result is all the readable records, and a record lost from the middle shows.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rereads = 0  # reads that found earlier bytes changed and started over
        self._queued: list[QueuedEvent] = []
        self._seen: dict[str, tuple[int, bytes]] = {}  # segment file -> size, digest

    def read(self) -> list[QueuedEvent]:
        """Every readable record, oldest first, as events."""
        if not self._unchanged():
            self._queued, self.rereads = [], self.rereads + 1
        known = self._queued[-1].seq if self._queued else 0
        last_seq = inspect_queue(self.directory).last_seq
        if last_seq > known:
            fresh = tail_records(self.directory, last_seq - known)
            self._queued += [QueuedEvent.decode(r) for r in fresh if r.seq > known]
        return list(self._queued)

    def _unchanged(self) -> bool:
        """True if every segment still starts with the bytes it held last time; notes them."""
        seen, self._seen = self._seen, {}
        newest = max(seen, default="")
        unchanged = True
        for path in sorted(self.directory.glob("*.seg")):
            data = path.read_bytes()
            if path.name in seen:
                size, digest = seen.pop(path.name)
            else:  # a new segment may only follow the ones seen before
                size, digest, unchanged = 0, EMPTY_DIGEST, unchanged and path.name > newest
            running = hashlib.sha256(data[:size])
            unchanged = unchanged and len(data) >= size and running.digest() == digest
            running.update(data[size:])
            self._seen[path.name] = (len(data), running.digest())
        return unchanged and not seen


def observe(data_dir: Path, tenant_id: str, queue: QueueReader) -> Observed:
    """Read the queue and the tenant's file of a dead daemon, changing nothing."""
    return Observed(queue.read(), *read_ratings(data_dir, tenant_id))


def read_ratings(data_dir: Path, tenant_id: str) -> tuple[dict[Key, StoredRating], list[str]]:
    """Every rating row (tombstones too), and the items whose aggregates disagree with them."""
    uri = f"{(data_dir / 'tenants' / f'{tenant_id}.sqlite').as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("SELECT user_id, item_id, score, deleted FROM ratings").fetchall()
        drift = conn.execute(
            "SELECT coalesce(s.item_id, r.item_id) FROM item_scores s FULL JOIN"
            " (SELECT item_id, count(*) n, sum(score) total FROM ratings WHERE deleted = 0"
            "  GROUP BY item_id) r ON r.item_id = s.item_id"
            " WHERE coalesce(s.count, 0) != coalesce(r.n, 0)"
            " OR coalesce(s.total, 0) != coalesce(r.total, 0)"
        ).fetchall()
    finally:
        conn.close()
    ratings = {(u, i): StoredRating(score, bool(deleted)) for u, i, score, deleted in rows}
    return ratings, [item for (item,) in drift]


@dataclass(frozen=True, slots=True)
class CrashSettings:
    """How hard and how long each round loads the daemon before the kill."""

    concurrency: tuple[int, int] = (16, 64)
    kill_after_ms: tuple[int, int] = (20, 400)
    # Small segments, so that kills also land while a segment is being rolled.
    segment_bytes: int | None = 256 * 1024
    start_timeout: float = 30.0
    request_timeout: float = 10.0


@dataclass(slots=True)
class RoundReport:
    """What one round did and found."""

    number: int
    concurrency: int
    kill_after_ms: int
    killed: bool = False
    sent: int = 0
    acknowledged: int = 0
    unanswered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    events: int = 0
    violations: list[Violation] = field(default_factory=list)
    source: str = ""  # fingerprint of edge_node/ at the start, "a->b" if it changed meanwhile


class Daemon:
    """One `edge-node serve` subprocess on 127.0.0.1, killed at the latest on `close`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.port = 0
        self._signalled = False

    @classmethod
    async def start(
        cls, data_dir: Path, env: Mapping[str, str], log: IO[bytes], start_seconds: float
    ) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            *edge_node_command(data_dir, "serve", "--host", "127.0.0.1", "--port", "0"),
            cwd=REPO,
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # a Ctrl-C meant for the runner must not stop it cleanly
        )
        daemon = cls(process)
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), start_seconds)
            if (match := LISTENING.match(line)) is None:
                raise HarnessError(f"edge-node serve did not start: {line!r}")
            daemon.port = int(match.group(1))
        except BaseException:
            await daemon.close()
            raise
        return daemon

    def kill(self) -> None:
        """SIGKILL, once: a second signal would reap the child behind asyncio's watcher."""
        if not self._signalled and self.process.returncode is None:
            self._signalled = True
            self.process.kill()

    async def close(self) -> None:
        self.kill()
        await asyncio.wait_for(self.process.wait(), 30)


def source_fingerprint() -> str:
    """A hash of the daemon's source, to tell whether it changed between rounds."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "edge_node").rglob("*.py")):
        digest.update(f"{path.relative_to(REPO)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def edge_node_command(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edge_node.cli", "--data-dir", str(data_dir), *args]


def daemon_environment(settings: CrashSettings) -> dict[str, str]:
    """The caller's environment without any EDGE_NODE_* setting, so defaults (strict) apply."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EDGE_NODE_")}
    if settings.segment_bytes is not None:
        env["EDGE_NODE_QUEUE_SEGMENT_BYTES"] = str(settings.segment_bytes)
    return env


class CrashRun:
    """One data directory under repeated crash rounds, and the ledger of all sent to it."""

    def __init__(
        self,
        data_dir: Path,
        tenant: Mapping[str, Any],
        seed: int,
        settings: CrashSettings,
        log: IO[bytes],
    ) -> None:
        self.data_dir = data_dir
        self.tenant_id: str = tenant["tenant_id"]
        self.api_key: str = tenant["api_key"]
        self.settings = settings
        self.ledger = Ledger()
        self.queue = QueueReader(data_dir / "queue" / "worker-0")
        self.rounds = 0
        self._random = random.Random(seed)
        self._tag = f"{seed:x}"
        self._log = log
        self._env = daemon_environment(settings)
        self._idle_keys: list[Key] = []  # keys written before and not in flight now

    @classmethod
    async def create(
        cls,
        data_dir: Path,
        *,
        seed: int,
        settings: CrashSettings | None = None,
        log_path: Path | None = None,
    ) -> CrashRun:
        """Create the tenant in a new data directory with `edge-node tenants create`."""
        settings = settings or CrashSettings()
        log = prepare(data_dir, log_path)
        command = edge_node_command(
            data_dir, "tenants", "create", "--name", "crash", "--rate-limit", "100000000"
        )
        process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, env=daemon_environment(settings), stdout=asyncio.subprocess.PIPE
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), settings.start_timeout)
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 30)
        if process.returncode != 0:
            raise HarnessError(f"tenants create exited {process.returncode}: {out!r}")
        return cls(data_dir, orjson.loads(out), seed, settings, log)

    def close(self) -> None:
        self._log.close()

    async def round(self) -> RoundReport:
        """Start the daemon, load it, SIGKILL it mid-load, then check everything so far."""
        self.rounds += 1
        low, high = self.settings.concurrency
        report = RoundReport(
            self.rounds,
            self._random.randint(low, high),
            self._random.randint(*self.settings.kill_after_ms),
        )
        source = source_fingerprint()
        daemon = await Daemon.start(
            self.data_dir, self._env, self._log, self.settings.start_timeout
        )
        try:
            report.killed = await self._load_and_kill(daemon, report)
        finally:
            await daemon.close()
        after = source_fingerprint()
        report.source = source if after == source else f"{source}->{after}"
        observed = await asyncio.to_thread(observe, self.data_dir, self.tenant_id, self.queue)
        report.events = len(observed.queued)
        report.violations = find_violations(self.ledger, observed, self.tenant_id)
        return report

    async def _load_and_kill(self, daemon: Daemon, report: RoundReport) -> bool:
        """Load the daemon until SIGKILL `kill_after_ms` in; True if that kill ended it."""
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=report.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout)
        base = f"http://127.0.0.1:{daemon.port}/v1/tenants/{self.tenant_id}"
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [
                asyncio.create_task(self._worker(session, base, stop, report))
                for _ in range(report.concurrency)
            ]
            try:
                await asyncio.sleep(report.kill_after_ms / 1000)
                if daemon.process.returncode is not None:
                    raise HarnessError(f"the daemon exited by itself: {daemon.process.returncode}")
                daemon.kill()
                stop.set()
                await asyncio.wait_for(daemon.process.wait(), 30)
                await asyncio.wait_for(asyncio.gather(*workers), self.settings.request_timeout * 2)
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        return daemon.process.returncode == -9

    async def _worker(
        self, session: aiohttp.ClientSession, base: str, stop: asyncio.Event, report: RoundReport
    ) -> None:
        while not stop.is_set():
            outcome, method, path, body = self._next_request(report.number, report.sent)
            report.sent += 1
            self.ledger.add(outcome)
            headers = {"X-API-Key": self.api_key, "X-Request-Id": outcome.request_id}
            try:
                async with session.request(method, base + path, json=body, headers=headers) as r:
                    payload = await r.read()
                    outcome.status = r.status
                if outcome.acknowledged and outcome.kind in ("create", "update"):
                    outcome.acknowledged_score = orjson.loads(payload)["score"]
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            finally:
                if outcome.kind in ("create", "update"):
                    self._idle_keys.append(outcome.key)
            report.statuses[outcome.status or 0] += 1
            report.acknowledged += outcome.acknowledged
            report.unanswered += outcome.status is None

    def _next_request(self, round_number: int, n: int) -> tuple[Outcome, str, str, Any]:
        """A new request: mostly creates of fresh keys, some updates, score reads, refusals."""
        request_id = f"crash.{self._tag}.{round_number}.{n}"
        item = f"item-{self._random.randrange(ITEMS)}"
        score = self._random.randint(1, 5)
        pick = self._random.random()
        if pick < 0.15:
            return Outcome(request_id, "score", ("", item)), "GET", f"/items/{item}/score", None
        if pick < 0.20:
            key = (f"refused.{round_number}.{n}", item)
            body = {"user_id": key[0], "item_id": item, "score": 0}
            return Outcome(request_id, "refused", key, 0), "POST", "/ratings", body
        if pick < 0.40 and self._idle_keys:
            at = self._random.randrange(len(self._idle_keys))
            self._idle_keys[at], self._idle_keys[-1] = self._idle_keys[-1], self._idle_keys[at]
            kind: Kind = "update"
            key = self._idle_keys.pop()
        else:
            kind, key = "create", (f"user.{round_number}.{n}", item)
        body = {"user_id": key[0], "item_id": key[1], "score": score}
        return Outcome(request_id, kind, key, score), "POST", "/ratings", body


def prepare(data_dir: Path, log_path: Path | None) -> IO[bytes]:
    """Make the empty data directory; open the file the daemons' stderr is appended to."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise HarnessError(f"{data_dir} is not empty: the ledger must start with the node")
    data_dir.mkdir(parents=True, exist_ok=True)
    return (log_path or data_dir.with_name(f"{data_dir.name}.daemon.log")).open("ab")


def describe(report: RoundReport) -> str:
    statuses = ", ".join(f"{code or 'none'}: {n}" for code, n in sorted(report.statuses.items()))
    return (
        f"round {report.number}: {report.concurrency} workers, SIGKILL at {report.kill_after_ms} ms"
        f" ({'killed' if report.killed else 'NOT killed'}), sent {report.sent}, acknowledged"
        f" {report.acknowledged}, unanswered {report.unanswered} [{statuses}],"
        f" queue {report.events} events, {len(report.violations)} violations"
    )
