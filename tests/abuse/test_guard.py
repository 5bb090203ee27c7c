"""Abuse detection: the spike detector's arithmetic, client IPs behind trusted proxies, the
block list on node.sqlite, and spiking IPs blocked, listed and lifted over real HTTP and the
real CLI."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from edge_node.abuse.blocks import BlockList, BlockStore, IpBlock
from edge_node.abuse.guard import AbuseGuard
from edge_node.abuse.spikes import SpikeDetector
from edge_node.clock import now_us
from edge_node.errors import ConfigError
from edge_node.http import guards
from edge_node.node_database import open_node_database
from edge_node.web.client_ip import ClientAddresses
from tests.cli.test_cli import Cli
from tests.conftest import NodeFactory
from tests.support import RunningNode

PROBLEM = "urn:edge-node:problem:"
PROXY = {"abuse.trusted_proxies": ["127.0.0.1/32"]}
BURSTY = {
    "abuse.window_seconds": 1.0,
    "abuse.min_rate_per_second": 5.0,
    "abuse.block": True,
    "abuse.block_seconds": 60,
    "abuse.lift_check_interval_seconds": 0.05,
    **PROXY,
}


def detector(**overrides: Any) -> SpikeDetector:
    settings = {"window": 10.0, "half_life": 60.0, "factor": 10.0, "min_rate": 1.0}
    return SpikeDetector(**{**settings, **overrides})


def feed(spikes: SpikeDetector, key: str, start: float, seconds: float, per_second: float) -> int:
    """Requests of `key` at an even rate; how many spikes they raised."""
    count = int(seconds * per_second)
    return sum(spikes.observe(key, start + i / per_second) is not None for i in range(count))


class TestSpikeDetector:
    def test_a_steady_rate_never_spikes(self) -> None:
        """Ten minutes at a steady 20 requests/s raise no spike once the first window passed."""
        spikes = detector(min_rate=50.0)
        assert feed(spikes, "k", 0.0, 600, 20) == 0
        assert spikes.baseline("k") == pytest.approx(20, rel=0.01)

    def test_a_burst_far_above_the_baseline_is_one_spike_per_window(self) -> None:
        """After minutes at 2/s, 30 s at 50/s (25x) raise one spike in each of its 3 windows
        (with a 10-minute half-life the baseline has barely moved by the third)."""
        spikes = detector(min_rate=5.0, half_life=600.0)
        assert feed(spikes, "k", 0.0, 300, 2) == 0
        assert feed(spikes, "k", 300.0, 30, 50) == 3

    def test_a_sustained_burst_becomes_the_baseline(self) -> None:
        """With a one-minute half-life, a burst that goes on is a spike at first and then,
        once the baseline has caught up, no longer."""
        spikes = detector(min_rate=5.0, half_life=60.0)
        feed(spikes, "k", 0.0, 300, 2)
        assert feed(spikes, "k", 300.0, 10, 50) == 1
        assert feed(spikes, "k", 310.0, 600, 50) == 0

    def test_a_rise_under_the_factor_is_not_a_spike(self) -> None:
        """After minutes at 2/s, a rise to 15/s (7.5x, factor 10) is not a spike."""
        spikes = detector(min_rate=5.0)
        feed(spikes, "k", 0.0, 300, 2)
        assert feed(spikes, "k", 300.0, 30, 15) == 0

    def test_the_floor_spares_quiet_keys(self) -> None:
        """A key with no history sending 5/s against a floor of 10/s raises no spike."""
        assert feed(detector(min_rate=10.0), "new", 0.0, 30, 5) == 0

    def test_silence_lowers_the_baseline(self) -> None:
        """After an hour of silence the old baseline has decayed: the same rate spikes again
        only if it passes the floor, and the baseline is near zero."""
        spikes = detector(min_rate=5.0, half_life=60.0)
        feed(spikes, "k", 0.0, 300, 20)
        spikes.observe("k", 3900.0)
        assert spikes.baseline("k") < 0.001

    def test_keys_are_independent_and_bounded(self) -> None:
        """One key's burst is not another's, and no more than max_keys are tracked."""
        spikes = detector(min_rate=5.0, max_keys=100)
        feed(spikes, "quiet", 0.0, 300, 1)
        assert feed(spikes, "loud", 0.0, 10, 100) == 1
        for i in range(1000):
            spikes.observe(f"ip-{i}", 400.0 + i)
        assert len(spikes) <= 100


async def get(node: RunningNode, path: str = "/healthz", **headers: str) -> tuple[int, Any]:
    async with node.session.get(node.url + path, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def burst(node: RunningNode, count: int, **headers: str) -> list[int]:
    return [(await get(node, **headers))[0] for _ in range(count)]


def sample(node: RunningNode, name: str, **labels: str) -> float:
    guard: AbuseGuard = node.abuse_guard  # type: ignore[attr-defined]
    return guard.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def guarded(make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch) -> NodeFactory:
    """Starts nodes with their app's AbuseGuard as `abuse_guard`, to read its metrics."""
    made: list[AbuseGuard] = []

    class RecordedGuard(AbuseGuard):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(guards, "AbuseGuard", RecordedGuard)

    async def start(**overrides: Any) -> RunningNode:
        node = await make_node(**overrides)
        node.abuse_guard = made[-1]  # type: ignore[attr-defined]
        return node

    return start


class TestBlocking:
    async def test_a_spiking_ip_is_blocked_with_its_own_problem_type(
        self, guarded: NodeFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past the floor within one window, the client's next requests get 403 ip-blocked
        with Retry-After; the spike is counted and logged as a structured event."""
        node = await guarded(**BURSTY)
        client = {"X-Forwarded-For": "203.0.113.7"}
        with caplog.at_level(logging.WARNING, logger="edge_node.abuse.guard"):
            statuses = await burst(node, 10, **client)
        assert statuses[:5] == [200] * 5
        assert set(statuses[5:]) == {403}
        status, body = await get(node, **client)
        assert (status, body["type"]) == (403, PROBLEM + "ip-blocked")
        async with node.session.get(node.url + "/healthz", headers=client) as response:
            assert 0 < int(response.headers["Retry-After"]) <= 60
        events = [r for r in caplog.records if getattr(r, "event", None) == "abuse.spike"]
        assert [(e.scope, e.key, e.blocked) for e in events] == [("ip", "203.0.113.7", True)]  # type: ignore[attr-defined]
        assert sample(node, "edge_node_abuse_spikes_total", scope="ip") == 1
        assert sample(node, "edge_node_abuse_ip_blocks_total") == 1
        assert sample(node, "edge_node_abuse_blocked_requests_total") >= 5

    async def test_other_clients_are_still_served(self, guarded: NodeFactory) -> None:
        """A block is of one address: another client behind the same proxy is served."""
        node = await guarded(**BURSTY)
        await burst(node, 10, **{"X-Forwarded-For": "203.0.113.7"})
        assert (await get(node, **{"X-Forwarded-For": "198.51.100.2"}))[0] == 200

    async def test_allow_listed_addresses_are_never_blocked(self, guarded: NodeFactory) -> None:
        """An address in allow_cidrs spikes (counted) but is never blocked."""
        node = await guarded(**BURSTY, **{"abuse.allow_cidrs": ["203.0.113.0/24"]})
        assert set(await burst(node, 20, **{"X-Forwarded-For": "203.0.113.7"})) == {200}
        assert sample(node, "edge_node_abuse_spikes_total", scope="ip") == 1
        assert sample(node, "edge_node_abuse_ip_blocks_total") == 0

    async def test_without_the_policy_spikes_are_only_reported(self, guarded: NodeFactory) -> None:
        """With abuse.block off a spike is counted and nobody is blocked."""
        node = await guarded(**{**BURSTY, "abuse.block": False})
        assert set(await burst(node, 20)) == {200}
        assert sample(node, "edge_node_abuse_spikes_total", scope="ip") == 1

    async def test_forwarded_for_is_ignored_from_untrusted_peers(
        self, guarded: NodeFactory
    ) -> None:
        """Without trusted proxies, X-Forwarded-For does not pick the address that is
        blocked: a burst under changing forged addresses blocks the peer itself."""
        node = await guarded(**{**BURSTY, "abuse.trusted_proxies": []})
        statuses = [
            (await get(node, **{"X-Forwarded-For": f"203.0.113.{i}"}))[0] for i in range(10)
        ]
        assert statuses[-1] == 403
        assert (await get(node, **{"X-Forwarded-For": "198.51.100.9"}))[0] == 403

    async def test_a_block_expires(self, guarded: NodeFactory) -> None:
        """Once block_seconds have passed the client is served again."""
        node = await guarded(**{**BURSTY, "abuse.block_seconds": 1})
        client = {"X-Forwarded-For": "203.0.113.7"}
        await burst(node, 10, **client)
        assert (await get(node, **client))[0] == 403
        await asyncio.sleep(1.1)
        assert (await get(node, **client))[0] == 200

    async def test_a_tenant_spike_is_counted_but_not_blocked(
        self, guarded: NodeFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A tenant's burst through its key, from many clients, is a tenant spike (metric and
        log event with the tenant id) and its requests go on being served."""
        node = await guarded(**{**BURSTY, "abuse.block": True})
        tenant = node.create_tenant(rate_limit=100_000)
        url = node.tenant_url(tenant.tenant_id, "/ratings")
        statuses = []
        with caplog.at_level(logging.WARNING, logger="edge_node.abuse.guard"):
            for i in range(12):
                headers = {**tenant.headers, "X-Forwarded-For": f"203.0.113.{i}"}
                async with node.session.get(url, headers=headers) as response:
                    statuses.append(response.status)
        assert set(statuses) == {200}
        assert sample(node, "edge_node_abuse_spikes_total", scope="tenant") == 1
        events = [r for r in caplog.records if getattr(r, "event", None) == "abuse.spike"]
        assert [(e.scope, e.key) for e in events] == [("tenant", tenant.tenant_id)]  # type: ignore[attr-defined]


class TestBlocksCommand:
    async def test_list_shows_and_lift_ends_a_block_while_the_daemon_runs(
        self, guarded: NodeFactory, tmp_path: Path
    ) -> None:
        """`edge-node blocks list` (another process) shows the daemon's block; after `blocks
        lift IP` the running daemon serves that client again."""
        node = await guarded(**BURSTY)
        client = {"X-Forwarded-For": "203.0.113.7"}
        await burst(node, 10, **client)
        cli = Cli(node.config.data_path, tmp_path)
        listed = await asyncio.to_thread(cli.run, "blocks", "list")
        assert listed.returncode == 0, listed.stderr
        [block] = orjson.loads(listed.stdout)
        assert (block["ip"], block["reason"]) == ("203.0.113.7", "spike")
        assert block["rate_per_second"] > block["baseline_per_second"]
        lifted = await asyncio.to_thread(cli.run, "blocks", "lift", "203.0.113.7")
        assert lifted.returncode == 0, lifted.stderr
        assert orjson.loads(lifted.stdout)["lifted"]["ip"] == "203.0.113.7"
        await asyncio.sleep(0.1)  # two lift checks
        assert (await get(node, **client))[0] == 200
        after = await asyncio.to_thread(cli.run, "blocks", "list")
        assert orjson.loads(after.stdout) == []

    @pytest.mark.parametrize(
        ("ip", "message"),
        [("203.0.113.99", "is not blocked"), ("not-an-ip", "not an IPv4 or IPv6 address")],
    )
    def test_lift_of_what_is_not_blocked_fails(self, tmp_path: Path, ip: str, message: str) -> None:
        """Lifting an address with no block, or text that is no address, exits 1 and says so."""
        result = Cli(tmp_path / "var", tmp_path).run("blocks", "lift", ip)
        assert result.returncode == 1
        assert message in result.stderr


def peer_request(peer: str, forwarded: list[str]) -> Any:
    """A request as aiohttp builds it, from `peer`, with these X-Forwarded-For headers."""
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 5000)
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    return make_mocked_request("GET", "/healthz", headers=headers, transport=transport)


class TestClientAddresses:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "client"),
        [
            pytest.param("198.51.100.1", ["203.0.113.7"], "198.51.100.1", id="untrusted-peer"),
            pytest.param("10.0.0.2", ["203.0.113.7"], "203.0.113.7", id="one-proxy"),
            pytest.param(
                "10.0.0.2", ["6.6.6.6, 203.0.113.7, 10.0.0.9"], "203.0.113.7", id="forged-prefix"
            ),
            pytest.param("10.0.0.2", ["6.6.6.6", "203.0.113.7"], "203.0.113.7", id="two-headers"),
            pytest.param("10.0.0.2", ["10.0.0.8, 10.0.0.9"], "10.0.0.8", id="all-proxies"),
            pytest.param("10.0.0.2", ["203.0.113.7, garbage"], "10.0.0.2", id="garbage-hop"),
            pytest.param("10.0.0.2", [], "10.0.0.2", id="no-header"),
            pytest.param("10.0.0.2", ["2001:DB8::0001"], "2001:db8::1", id="ipv6-canonical"),
        ],
    )
    def test_the_client_is_the_rightmost_untrusted_hop(
        self, peer: str, forwarded: list[str], client: str
    ) -> None:
        """Behind proxies in 10.0.0.0/8, the client is the rightmost X-Forwarded-For address
        that is not a proxy; an untrusted peer is the client whatever it sends."""
        addresses = ClientAddresses(["10.0.0.0/8"])
        assert addresses.of(peer_request(peer, forwarded)) == client

    def test_a_bad_network_is_a_config_error(self) -> None:
        """A trusted proxy that is not a CIDR is refused with the setting's name."""
        with pytest.raises(ConfigError, match=r"abuse.trusted_proxies\[1\]"):
            ClientAddresses(["10.0.0.0/8", "proxy.example"])


class TestBlockList:
    def test_a_lift_by_another_connection_is_seen_after_the_check_interval(
        self, tmp_path: Path
    ) -> None:
        """The daemon's view asks node.sqlite nothing until its check interval has passed,
        then sees a lift made by another connection (as the CLI makes it)."""
        daemon_db, cli_db = open_node_database(tmp_path), open_node_database(tmp_path)
        clock = [0.0]
        blocks = BlockList(BlockStore(daemon_db), check_interval=1.0, clock=lambda: clock[0])
        now = now_us()
        blocks.add(IpBlock("203.0.113.7", "spike", now, now + 60_000_000, 50.0, 1.0))
        assert BlockStore(cli_db).lift("203.0.113.7") is not None
        clock[0] = 0.5
        assert blocks.blocked("203.0.113.7") is not None, "not yet checked"
        clock[0] = 1.0
        assert blocks.blocked("203.0.113.7") is None
        daemon_db.close()
        cli_db.close()

    def test_blocks_survive_a_restart(self, tmp_path: Path) -> None:
        """A block written by one process is active in a view opened later on the same file."""
        first = open_node_database(tmp_path)
        now = now_us()
        BlockList(BlockStore(first), check_interval=1.0).add(
            IpBlock("2001:db8::1", "spike", now, now + 60_000_000, 50.0, 1.0)
        )
        first.close()
        second = open_node_database(tmp_path)
        assert BlockList(BlockStore(second), check_interval=1.0).blocked("2001:db8::1")
        second.close()
