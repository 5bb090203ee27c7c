"""The load: tenants' clients reading, writing and deleting ratings over real HTTP, and an
operator issuing and revoking API keys, against whichever edge nodes are up.

Each (tenant, user) pair is one client lane that sends one request at a time, so the writes
of one rating key never overlap and the record of what was acknowledged is exact. Every
answer is judged as it arrives (tests/system/record.py keeps the verdicts): no 5xx but the
documented 503s, problem+json on every error, no other tenant's data in any body, a live
key never refused, a revoked key refused at once by the node that revoked it.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from edge_node.errors import PROBLEM_TYPE_BASE
from edge_node.rating.replication import rating_id
from tests.system.cluster import Cluster, EdgeDaemon
from tests.system.record import InDoubt, Observations, WriteOp

DOCUMENTED_503 = frozenset(
    {"usage-queue-full", "usage-not-recorded", "usage-pending", "storage-unavailable", "not-ready"}
)
PROBLEM_JSON = "application/problem+json"
REQUEST_TIMEOUT_SECONDS = 30


@dataclass
class ApiKey:
    key_id: str
    api_key: str
    home: str | None  # the node that issued it, until every node is known to have it
    revoking: bool = False


@dataclass
class TenantClients:
    tenant_id: str
    marker: str  # prefixes every user id and comment the tenant writes
    keys: list[ApiKey]

    def usable(self, node_id: str) -> list[ApiKey]:
        return [k for k in self.keys if not k.revoking and k.home in (None, node_id)]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    slug: str | None
    document: Any


IN_DOUBT = Answer(0, None, None)


@dataclass
class Revocation:
    key: ApiKey
    tenant: TenantClients
    node_id: str
    probed_everywhere: bool = False


def parse_us(text: str) -> int:
    """Microseconds since the epoch from edge-node's RFC 3339 text (`...SS.ffffffZ`)."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(moment.timetuple()) * 1_000_000 + moment.microsecond


@dataclass
class Traffic:
    cluster: Cluster
    tenants: list[TenantClients]
    seen: Observations
    rate: float = 60.0  # requests per second over all lanes, roughly
    users: int = 4
    items: int = 8
    seed: int = 0
    key_interval: float = 8.0
    revocations: list[Revocation] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def open(self) -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=200),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        )
        # aiohttp resends a GET or DELETE whose connection broke (RFC 9112 9.3.1): a request
        # a dying node had served would be sent again, and its answer (or the refusal of the
        # restarted node) would hide that it may have been carried out and billed. Every
        # request here is sent once; aiohttp's own test client turns retrying off the same way.
        assert hasattr(session, "_retry_connection"), "aiohttp no longer retries this way"
        session._retry_connection = False
        self._session = session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Every lane and the key operator, until `stop` is set."""
        lanes = [
            self._lane(tenant, f"{tenant.marker}-u{n}", stop, n)
            for tenant in self.tenants
            for n in range(self.users)
        ]
        await asyncio.gather(*lanes, self._operator(stop))

    def promote_keys(self) -> None:
        """Every key issued so far is known to every node (the checker saw the registries
        converge)."""
        for tenant in self.tenants:
            for key in tenant.keys:
                key.home = None

    # Requests.

    async def send(
        self,
        node: EdgeDaemon,
        tenant: TenantClients,
        key: ApiKey,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Answer | None:
        """One request to a tenant route; None when the node refused the connection (down),
        IN_DOUBT when the connection broke after sending."""
        assert self._session is not None
        url = node.url
        if url is None:
            self.seen.refused += 1
            return None
        rid = request_id or f"chaos-{next(self._ids)}"
        doubt = InDoubt(tenant.tenant_id, node.node_id, node.incarnation, billable=True)
        self.seen.in_flight[rid] = doubt
        headers = {"X-API-Key": key.api_key, "X-Request-Id": rid}
        try:
            async with self._session.request(
                method, f"{url}{path}", json=body, headers=headers
            ) as response:
                raw = await response.read()
                status, content_type = response.status, response.content_type
        except aiohttp.ClientConnectorError:
            self.seen.refused += 1
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            if node.up and node.incarnation == doubt.incarnation:
                self.seen.violate(
                    "errors",
                    f"{method} {path} on {node.node_id}: connection lost while it ran: {exc!r}",
                )
            self.seen.in_doubt[rid] = doubt
            return IN_DOUBT
        finally:
            self.seen.in_flight.pop(rid, None)
        answer = self._judge(tenant, key, node, method, path, status, content_type, raw)
        if answer.slug in ("usage-pending", "usage-not-recorded"):
            self.seen.in_doubt[rid] = doubt  # carried out; its event may yet be written
        if status < 400:
            self.seen.acknowledged_requests[rid] = f"{method} {path} {status} on {node.node_id}"
        return answer

    def _judge(
        self,
        tenant: TenantClients,
        key: ApiKey,
        node: EdgeDaemon,
        method: str,
        path: str,
        status: int,
        content_type: str,
        raw: bytes,
    ) -> Answer:
        seen = self.seen
        seen.requests += 1
        document = json.loads(raw) if raw else None
        slug = None
        where = f"{method} {path} on {node.node_id}"
        if status >= 400:
            if content_type != PROBLEM_JSON or not isinstance(document, dict):
                seen.violate("errors", f"{where}: {status} without problem+json ({raw[:200]!r})")
            else:
                slug = str(document.get("type", "")).removeprefix(PROBLEM_TYPE_BASE)
        seen.statuses[f"{status} {slug}" if slug else str(status)] += 1
        if status >= 500 and not (status == 503 and slug in DOCUMENTED_503):
            seen.violate("errors", f"{where}: {status} {slug}: {document}")
        if status < 400:
            seen.acknowledged_units[tenant.tenant_id] += 1  # every tenant route bills 1 unit
        if status == 401 and not key.revoking:
            seen.violate("keys", f"{where}: live key {key.key_id} refused")
        return Answer(status, slug, document)

    # The clients.

    async def _lane(
        self, tenant: TenantClients, user: str, stop: asyncio.Event, number: int
    ) -> None:
        rng = random.Random(f"{self.seed}/{tenant.tenant_id}/{number}")
        lanes = len(self.tenants) * self.users
        written: set[str] = set()
        while not stop.is_set():
            await asyncio.sleep(lanes / self.rate * rng.uniform(0.5, 1.5))
            nodes = [n for n in self.cluster.nodes if n.up]
            if not nodes:
                continue
            node = rng.choice(nodes)
            keys = tenant.usable(node.node_id)
            if not keys:
                continue
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.35:
                await self._read_score(node, tenant, key, f"item-{rng.randrange(self.items)}")
            elif roll < 0.5:
                await self._list(node, tenant, key, user, rng)
            elif roll < 0.85:
                item = f"item-{rng.randrange(self.items)}"
                written.add(item)
                await self._upsert(node, tenant, key, user, item, rng.randint(1, 5))
            elif roll < 0.97 and written:
                await self._delete(node, tenant, key, user, rng.choice(sorted(written)))
            else:
                await self._cross_tenant(node, tenant, key, rng)

    async def _read_score(
        self, node: EdgeDaemon, tenant: TenantClients, key: ApiKey, item: str
    ) -> None:
        path = f"/v1/tenants/{tenant.tenant_id}/items/{item}/score"
        answer = await self.send(node, tenant, key, "GET", path)
        if answer is None or answer.status != 200:
            return
        raters = self.seen.raters.get((tenant.tenant_id, item), set())
        doc = answer.document
        if doc.get("item_id") != item or doc.get("count", 0) > len(raters):
            self.seen.violate(
                "isolation",
                f"score of {item} for {tenant.marker} counts {doc.get('count')} ratings, but"
                f" only {len(raters)} of its users ever rated it: {doc}",
            )

    async def _list(
        self, node: EdgeDaemon, tenant: TenantClients, key: ApiKey, user: str, rng: random.Random
    ) -> None:
        by_user = rng.random() < 0.5
        query = f"user_id={user}" if by_user else f"item_id=item-{rng.randrange(self.items)}"
        path = f"/v1/tenants/{tenant.tenant_id}/ratings"
        answer = await self.send(node, tenant, key, "GET", f"{path}?{query}&limit=100")
        if answer is None or answer.status != 200:
            return
        for rating in answer.document["ratings"]:
            foreign = (
                rating["tenant_id"] != tenant.tenant_id
                or not rating["user_id"].startswith(f"{tenant.marker}-")
                or (by_user and rating["user_id"] != user)
                or not (rating["comment"] or f"{tenant.marker}:").startswith(f"{tenant.marker}:")
            )
            if foreign:
                self.seen.violate(
                    "isolation", f"{tenant.marker} listed on {node.node_id}: {rating}"
                )

    async def _upsert(
        self,
        node: EdgeDaemon,
        tenant: TenantClients,
        key: ApiKey,
        user: str,
        item: str,
        score: int,
    ) -> None:
        comment = f"{tenant.marker}:{next(self._ids)}"
        body = {"user_id": user, "item_id": item, "score": score, "comment": comment}
        # Before sending: the rating counts in the item's score from its commit on, while
        # its answer is still on the way, and another lane may read that score meanwhile.
        self.seen.rating_sent(tenant.tenant_id, user, item)
        answer = await self.send(
            node, tenant, key, "POST", f"/v1/tenants/{tenant.tenant_id}/ratings", body=body
        )
        rating_key = (tenant.tenant_id, user, item)
        if answer is IN_DOUBT or (
            answer is not None and answer.slug in ("usage-not-recorded", "usage-pending")
        ):
            op = WriteOp("upsert", rating_key, node.node_id, False, score, comment)
            self.seen.write(op)
        elif answer is not None and answer.status in (200, 201):
            doc = answer.document
            sent = {**body, "tenant_id": tenant.tenant_id}
            if any(doc.get(name) != value for name, value in sent.items()):
                self.seen.violate("isolation", f"upsert {sent} answered with {doc}")
            stamp = (parse_us(doc["updated_at"]), node.node_id)
            self.seen.write(
                WriteOp("upsert", rating_key, node.node_id, True, score, comment, stamp)
            )

    async def _delete(
        self, node: EdgeDaemon, tenant: TenantClients, key: ApiKey, user: str, item: str
    ) -> None:
        offset = node.followed_clock_offset()
        sent_us = time.time_ns() // 1000
        rid = rating_id(tenant.tenant_id, user, item)
        path = f"/v1/tenants/{tenant.tenant_id}/ratings/{rid}"
        answer = await self.send(node, tenant, key, "DELETE", path)
        not_before = sent_us + int(min(offset, node.followed_clock_offset()) * 1e6)
        rating_key = (tenant.tenant_id, user, item)
        if answer is IN_DOUBT:
            self.seen.write(WriteOp("delete", rating_key, node.node_id, False))
        elif answer is not None and answer.status == 204:
            op = WriteOp("delete", rating_key, node.node_id, True, not_before_us=not_before)
            self.seen.write(op)

    async def _cross_tenant(
        self, node: EdgeDaemon, tenant: TenantClients, key: ApiKey, rng: random.Random
    ) -> None:
        other = rng.choice([t for t in self.tenants if t is not tenant] or [tenant])
        path = f"/v1/tenants/{other.tenant_id}/items/item-0/score"
        answer = await self.send(node, tenant, key, "GET", path)
        if answer is not None and answer is not IN_DOUBT and answer.status < 400:
            self.seen.violate(
                "isolation", f"{tenant.marker}'s key read {other.marker}'s score on {node.node_id}"
            )

    # The operator.

    async def _operator(self, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.seed}/operator")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.key_interval * rng.uniform(0.5, 1.5))
            except TimeoutError:
                tenant = rng.choice(self.tenants)
                await self.issue_key(tenant, rng.choice(self.cluster.nodes))
                await self.revoke_key(tenant, rng.choice(self.cluster.nodes), rng)

    async def issue_key(self, tenant: TenantClients, node: EdgeDaemon) -> None:
        code, out, err = await node.cli("keys", "create", tenant.tenant_id, "--role", "admin")
        if code != 0:
            self.seen.violate("keys", f"keys create on {node.node_id} failed ({code}): {err}")
            return
        issued = json.loads(out)
        tenant.keys.append(ApiKey(issued["key_id"], issued["api_key"], node.node_id))

    async def revoke_key(self, tenant: TenantClients, node: EdgeDaemon, rng: random.Random) -> None:
        """Revoke a key every node knows (keeping one), then check the revoking node refuses
        it at once."""
        known = [k for k in tenant.keys if k.home is None and not k.revoking]
        if len(known) < 2:
            return
        key = rng.choice(known)
        key.revoking = True
        code, _, err = await node.cli("keys", "revoke", key.key_id)
        if code != 0:
            self.seen.violate("keys", f"keys revoke on {node.node_id} failed ({code}): {err}")
            return
        self.revocations.append(Revocation(key, tenant, node.node_id))
        answer = await self.send(
            node, tenant, key, "GET", f"/v1/tenants/{tenant.tenant_id}/items/item-0/score"
        )
        if answer is not None and answer is not IN_DOUBT and answer.status != 401:
            self.seen.violate(
                "keys", f"{node.node_id} answered {answer.status} to key {key.key_id} it revoked"
            )

    async def probe_revoked_everywhere(self) -> int:
        """Every node refuses every key revoked since the last probe; how many probes."""
        probes = 0
        for revocation in self.revocations:
            if revocation.probed_everywhere:
                continue
            revocation.probed_everywhere = True
            tenant, key = revocation.tenant, revocation.key
            for node in self.cluster.nodes:
                path = f"/v1/tenants/{tenant.tenant_id}/items/item-0/score"
                answer = await self.send(node, tenant, key, "GET", path)
                probes += 1
                if answer is None or answer is IN_DOUBT or answer.status != 401:
                    status = "no answer" if answer in (None, IN_DOUBT) else answer.status
                    self.seen.violate(
                        "keys",
                        f"{node.node_id} answered {status} to key {key.key_id}, revoked on"
                        f" {revocation.node_id}, after the registries converged",
                    )
        return probes

    async def fill_queue(self, node: EdgeDaemon, stop: asyncio.Event, lanes: int = 16) -> None:
        """Score reads sent to one node as fast as it answers, with long request ids so each
        usage event is large, until `stop`."""

        async def lane(number: int) -> None:
            while not stop.is_set():
                tenant = self.tenants[number % len(self.tenants)]
                keys = tenant.usable(node.node_id)
                if not node.up or not keys:
                    await asyncio.sleep(0.1)
                    continue
                rid = f"fill-{next(self._ids)}-".ljust(128, "x")
                path = f"/v1/tenants/{tenant.tenant_id}/items/item-{number % self.items}/score"
                await self.send(node, tenant, keys[0], "GET", path, request_id=rid)

        await asyncio.gather(*(lane(n) for n in range(lanes)))


async def create_tenants(cluster: Cluster, count: int) -> list[TenantClients]:
    """Tenants created with `edge-node tenants create` on the first node (provisioned in
    Stripe there), each with a second key; they reach the other nodes through PostgreSQL."""
    first = cluster.nodes[0]

    async def create(n: int) -> TenantClients:
        marker = f"t{n}"
        code, out, err = await first.cli(
            "tenants",
            "create",
            "--name",
            f"tenant-{n}",
            "--rate-limit",
            "10000000",
            "--email",
            f"billing+tenant-{n}@example.com",
        )
        if code != 0:
            raise RuntimeError(f"tenants create failed ({code}): {err}")
        created = json.loads(out)
        tenant = TenantClients(
            created["tenant_id"], marker, [ApiKey(created["key_id"], created["api_key"], None)]
        )
        code, out, err = await first.cli("keys", "create", tenant.tenant_id, "--role", "admin")
        if code != 0:
            raise RuntimeError(f"keys create failed ({code}): {err}")
        issued = json.loads(out)
        tenant.keys.append(ApiKey(issued["key_id"], issued["api_key"], None))
        return tenant

    return list(await asyncio.gather(*(create(n) for n in range(count))))
