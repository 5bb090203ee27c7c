"""Mixed load over real HTTP for fault tests, and the check of what the daemon stored and
billed against what its clients were told."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from edge_node.queue import inspect_queue, tail_records
from edge_node.usage.event import UsageEvent


@dataclass(slots=True)
class Sent:
    """One request and what its client saw (status 0: no answer at all)."""

    request_id: str
    tenant_id: str
    method: str
    user_id: str = ""
    item_id: str = ""
    status: int = 0
    problem_type: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    """Concurrent clients over the tenants: ratings created under a user id used once (so each
    stored rating names the one request that wrote it), score reads and lists."""

    url: str
    tenants: list[dict[str, Any]]
    concurrency: int = 12
    seed: int = 5
    sent: list[Sent] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(
                    self._client(session, stop, random.Random(self.seed + n))
                    for n in range(self.concurrency)
                )
            )

    async def _client(
        self, session: aiohttp.ClientSession, stop: asyncio.Event, rng: random.Random
    ) -> None:
        while not stop.is_set():
            await self.one(session, rng)

    async def one(self, session: aiohttp.ClientSession, rng: random.Random) -> Sent:
        tenant = rng.choice(self.tenants)
        n = next(self._ids)
        sent = Sent(f"fault-{n}", tenant["tenant_id"], "GET")
        base = f"{self.url}/v1/tenants/{tenant['tenant_id']}"
        item = f"item-{rng.randrange(16)}"
        pick = rng.random()
        body: Any = None
        if pick < 0.6:
            sent.method, sent.user_id, sent.item_id = "POST", f"user-{n}", item
            path = "/ratings"
            body = {
                "user_id": sent.user_id,
                "item_id": item,
                "score": rng.randint(1, 5),
                "comment": "x" * rng.randrange(200),
            }
        elif pick < 0.85:
            path = f"/items/{item}/score"
        else:
            path = f"/ratings?item_id={item}&limit=5"
        headers = {"X-API-Key": tenant["api_key"], "X-Request-Id": sent.request_id}
        self.sent.append(sent)
        try:
            async with session.request(sent.method, base + path, json=body, headers=headers) as r:
                document = await r.json(content_type=None)
                sent.status = r.status
                sent.retry_after = r.headers.get("Retry-After")
                if r.status >= 400:
                    sent.problem_type = str(document.get("type", ""))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            sent.status = 0
        return sent

    def statuses(self) -> Counter[int]:
        return Counter(sent.status for sent in self.sent)


def queued_events(queue_dir: Path) -> list[UsageEvent]:
    """Every usage event in a queue directory (its daemon stopped)."""
    last = inspect_queue(queue_dir).last_seq
    return [UsageEvent.decode(record.payload) for record in tail_records(queue_dir, last)]


def stored_ratings(data_dir: Path, tenant_id: str) -> set[tuple[str, str]]:
    """(user id, item id) of every rating in a tenant's file."""
    uri = f"{(data_dir / 'tenants' / f'{tenant_id}.sqlite').as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return {(u, i) for u, i in conn.execute("SELECT user_id, item_id FROM ratings")}
    finally:
        conn.close()


def billing_violations(load: Load, data_dir: Path, queue_dir: Path) -> list[str]:
    """Every stored write without its one usage event, every event without its write, every
    acknowledged write not stored, every request billed twice."""
    events = queued_events(queue_dir)
    found: list[str] = []
    per_request = Counter(event.request_id for event in events)
    found += [f"{rid} billed {n} times" for rid, n in per_request.items() if n > 1]
    by_request = {event.request_id: event for event in events}
    writes = {(s.tenant_id, s.user_id, s.item_id): s for s in load.sent if s.method == "POST"}
    stored = {
        (tenant["tenant_id"], user, item)
        for tenant in load.tenants
        for user, item in stored_ratings(data_dir, tenant["tenant_id"])
    }
    for key in stored:
        sent = writes[key]
        event = by_request.get(sent.request_id)
        if event is None or event.operation != "rating.create":
            found.append(f"{sent.request_id} stored {key} without its usage event")
    for key, sent in writes.items():
        if 200 <= sent.status < 300 and key not in stored:
            found.append(f"{sent.request_id} acknowledged {sent.status} but not stored")
        if sent.request_id in by_request and key not in stored:
            found.append(f"{sent.request_id} billed but not stored")
    return found
