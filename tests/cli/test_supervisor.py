"""`serve --workers N`: workers sharing one port, each with its own queue, under a supervisor."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_node.cli.runtime_file import RuntimeFile
from edge_node.queue import inspect_queue
from tests.cli.test_cli import clean_environment
from tests.cli.test_lifecycle import create_tenant
from tests.metrics.conftest import parse_samples
from tests.served import NotifyListener, ServedNode
from tests.sync.billing.test_daemon import Node as BillingNode
from tests.sync.stripe.support import StandinProcess
from tests.web.test_accepting import ipv6_loopback

# The announcement of a node on every address: the first URL, and the other family's.
EVERY_ADDRESS = re.compile(
    r"^edge-node listening on (http://(?:0\.0\.0\.0|\[::\]):\d+)"
    r" and http://(?:0\.0\.0\.0|\[::\]):\d+ "
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def queue_depths(data_dir: Path) -> dict[str, int]:
    return {
        path.name: inspect_queue(path).last_seq
        for path in sorted((data_dir / "queue").glob("worker-*"))
    }


class TestWorkers:
    def test_workers_share_the_port_and_each_has_its_own_queue(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With --workers 2 the supervisor says READY once both workers are, publishes the
        node's runtime record (its own pid and URL, for `edge-node status`), connections are
        spread over both, each worker meters into its own queue directory, and SIGTERM stops
        the workers and the supervisor with exit status 0, removing the record."""
        data_dir = tmp_path / "data"
        tenant = create_tenant(data_dir)
        node = ServedNode(data_dir, "--workers", "2", notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        ready = notify.wait_for("READY")
        assert ready["STATUS"] == f"serving on {node.url} with 2 workers"
        workers = node.children()
        assert len(workers) == 2
        record = RuntimeFile(data_dir).read()
        assert record is not None
        assert (record.pid, record.listen) == (node.process.pid, (node.url,))
        path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"
        for _ in range(40):  # urllib opens a new connection, from a new port, each time
            assert node.request("GET", path, {"X-API-Key": tenant["api_key"]})[0] == 200
        depths = queue_depths(data_dir)
        # The second bank of directories waits, empty, for the workers of an upgrade.
        assert sorted(depths) == ["worker-0", "worker-1", "worker-2", "worker-3"]
        assert depths["worker-2"] == depths["worker-3"] == 0
        assert sum(depths.values()) == 40
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths
        assert node.stop() == 0
        notify.wait_for("STOPPING")
        assert not any(alive(pid) for pid in workers)
        assert RuntimeFile(data_dir).read() is None
        assert "Traceback" not in node.log.read_text()

    def test_workers_serve_every_address_of_the_host_on_one_port(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With a host of several addresses ("": every IPv4 and IPv6 one) and port 0, the
        supervisor listens on one port on each, and hands every socket to every worker:
        connections to 127.0.0.1 and to ::1 are both answered, by both workers. The runtime
        record and the announcement name each address."""
        if not ipv6_loopback():
            pytest.skip("this machine has no IPv6 loopback: a host of one address only")
        data_dir = tmp_path / "data"
        tenant = create_tenant(data_dir)
        node = ServedNode(
            data_dir,
            "--workers",
            "2",
            "--host",
            "",
            notify=notify,
            log=tmp_path / "log",
            announced=EVERY_ADDRESS,
        )
        served_nodes.append(node)
        port = node.url.rsplit(":", 1)[1]
        ready = notify.wait_for("READY")
        urls = {f"http://0.0.0.0:{port}", f"http://[::]:{port}"}
        record = RuntimeFile(data_dir).read()
        assert record is not None
        assert set(record.listen) == urls
        assert record.listen[0] == node.url  # in the order the host's addresses resolve
        first, second = record.listen
        assert ready["STATUS"] == f"serving on {first} and {second} with 2 workers"
        path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"
        for host in ("127.0.0.1", "[::1]") * 20:  # a new connection each time
            node.url = f"http://{host}:{port}"
            assert node.request("GET", path, {"X-API-Key": tenant["api_key"]})[0] == 200
        depths = queue_depths(data_dir)
        assert depths["worker-0"] + depths["worker-1"] == 40
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths
        assert node.stop() == 0
        assert "Traceback" not in node.log.read_text()

    def test_a_single_process_serves_every_address_in_their_order(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """Without workers too, a host of several addresses is served on one port, and the
        announcement, READY and the runtime record (whose first URL `edge-node status` asks)
        list the URLs in the order the host's addresses resolve, every time."""
        if not ipv6_loopback():
            pytest.skip("this machine has no IPv6 loopback: a host of one address only")
        found = socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        families = [family for family, *_ in dict.fromkeys(found)]
        for attempt in range(3):
            notify.drain()  # the last node's messages are not this one's
            notify.messages.clear()
            data_dir = tmp_path / f"data-{attempt}"
            node = ServedNode(
                data_dir,
                "--host",
                "",
                notify=notify,
                log=tmp_path / f"log-{attempt}",
                announced=EVERY_ADDRESS,
            )
            served_nodes.append(node)
            port = node.url.rsplit(":", 1)[1]
            ready = notify.wait_for("READY")
            record = RuntimeFile(data_dir).read()
            assert record is not None
            expected = [
                f"http://0.0.0.0:{port}" if family == socket.AF_INET else f"http://[::]:{port}"
                for family in families
            ]
            assert list(record.listen) == expected
            assert node.url == expected[0]
            assert ready["STATUS"] == f"serving on {expected[0]} and {expected[1]}"
            for host in ("127.0.0.1", "[::1]"):
                with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as answer:
                    assert answer.status == 200
            assert node.stop() == 0

    def test_a_tenants_rate_limit_holds_for_the_node_not_per_worker(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With --workers 2 and a limit of 20 a minute, 40 requests on 40 connections (the
        kernel spreads them over both workers) get 20 answers and 429s for the rest, plus
        at most what refilled meanwhile: not 20 from each worker. A worker killed and
        restarted takes from the same buckets: the tenant is still refused."""
        data_dir = tmp_path / "data"
        tenant = create_tenant(data_dir)
        env = {**clean_environment(), "EDGE_NODE_RATE_LIMIT_PER_MINUTE": "20"}
        node = ServedNode(data_dir, "--workers", "2", notify=notify, env=env, log=tmp_path / "log")
        served_nodes.append(node)
        notify.wait_for("READY")
        path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"
        began = time.monotonic()
        # At once, so that both workers accept some (one after another, one may take all).
        with ThreadPoolExecutor(max_workers=40) as pool:
            answers = list(
                pool.map(
                    lambda _: node.request("GET", path, {"X-API-Key": tenant["api_key"]}),
                    range(40),
                )
            )
        refilled = (time.monotonic() - began) / 3  # 20 a minute: one every 3 s
        statuses = [status for status, _, _ in answers]
        assert set(statuses) == {200, 429}
        assert 20 <= statuses.count(200) <= 20 + refilled + 1, statuses
        depths = queue_depths(data_dir)
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths  # both workers answered some
        assert sum(depths.values()) == statuses.count(200)
        victim, _ = node.children()
        os.kill(victim, signal.SIGKILL)
        wait_for_status(notify, "restarted")
        again = [node.request("GET", path, {"X-API-Key": tenant["api_key"]}) for _ in range(10)]
        refilled = (time.monotonic() - began) / 3
        assert statuses.count(200) + [a[0] for a in again].count(200) <= 20 + refilled + 1
        assert node.stop() == 0

    def test_a_killed_worker_is_restarted(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """A worker killed with SIGKILL is started again on the same port and queue directory
        (the supervisor's STATUS says so) while the other keeps serving throughout."""
        data_dir = tmp_path / "data"
        node = ServedNode(
            data_dir,
            "--workers",
            "2",
            notify=notify,
            env=None,
            log=tmp_path / "log",
        )
        served_nodes.append(node)
        notify.wait_for("READY")
        victim, survivor = node.children()
        os.kill(victim, signal.SIGKILL)
        exited = wait_for_status(notify, "exited (-9)")
        assert exited.startswith("worker ")
        assert node.request("GET", "/healthz")[0] == 200
        wait_for_status(notify, "restarted")
        workers = node.children()
        assert survivor in workers
        assert victim not in workers
        assert len(workers) == 2
        assert all(node.request("GET", "/healthz")[0] == 200 for _ in range(10))
        assert node.stop() == 0
        log = node.log.read_text()
        assert "exited with status -9; restarting it in" in log
        assert "Traceback" not in log


@pytest.fixture
def standin_process() -> Iterator[StandinProcess]:
    process = StandinProcess.start()
    yield process
    process.stop()


class TestSyncOncePerNode:
    def test_the_supervisor_flushes_the_usage_of_every_worker_to_stripe(
        self, tmp_path: Path, standin_process: StandinProcess, served_nodes: list[ServedNode]
    ) -> None:
        """With Stripe configured and --workers 2, usage metered by both workers reaches
        Stripe through the one sync worker in the supervisor, billed exactly: each queue's
        cursor is committed by the supervisor, and `billing reconcile` agrees."""
        billing = BillingNode(tmp_path, standin_process)
        tenants = [billing.tenant("acme"), billing.tenant("globex")]
        node = ServedNode(billing.data_dir, "--workers", "2", env=billing.env, log=tmp_path / "log")
        served_nodes.append(node)
        for n, tenant in enumerate(tenants):
            billing.serve(node.url, tenant, 20 + n)
        billing.wait_until_billed()
        depths = queue_depths(billing.data_dir)
        assert sum(depths.values()) == 41
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths
        assert node.stop() == 0
        for name, last_seq in depths.items():
            if not last_seq:  # the empty bank has no cursor yet
                continue
            cursor = inspect_queue(billing.data_dir / "queue" / name).consumers["billing"].cursor
            assert cursor == last_seq, name
        done = billing.cli("billing", "reconcile", "--json")
        assert done.returncode == 0, done.stdout
        assert "Traceback" not in node.log.read_text()


class TestWorkerWatchdog:
    def test_a_worker_whose_loop_stops_is_killed_and_restarted(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """Under a watchdog, a worker that stops pinging (stopped with SIGSTOP, as a stuck
        loop would be) is killed by the supervisor and started again, which itself keeps
        pinging systemd throughout."""
        node = ServedNode(
            tmp_path / "data",
            "--workers",
            "2",
            notify=notify,
            watchdog_usec=3_000_000,
            log=tmp_path / "log",
        )
        served_nodes.append(node)
        notify.wait_for("READY")
        stuck, _ = node.children()
        os.kill(stuck, signal.SIGSTOP)
        wait_for_status(notify, "exited (-9)")
        wait_for_status(notify, "restarted")
        assert stuck not in node.children()
        assert notify.count("WATCHDOG") >= 2
        assert node.stop() == 0, node.log.read_text()[-4000:]
        assert "sent no watchdog ping" in node.log.read_text()


def wait_for_status(notify: NotifyListener, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in notify.messages:
            if text in message.get("STATUS", ""):
                return message["STATUS"]
        notify.receive(max(0.01, deadline - time.monotonic()))
    raise AssertionError(f"no STATUS with {text!r}: {notify.messages}")


class TestOrphanedWorkers:
    def test_workers_stop_when_their_supervisor_is_killed(
        self, tmp_path: Path, served_nodes: list[ServedNode]
    ) -> None:
        """A supervisor killed with SIGKILL leaves no worker behind: each notices and stops,
        releasing the port and its queue, so the next start finds the data dir free."""
        data_dir = tmp_path / "data"
        node = ServedNode(data_dir, "--workers", "2", log=tmp_path / "log")
        served_nodes.append(node)
        workers = node.children()
        node.process.kill()
        node.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "orphaned workers kept running"
            time.sleep(0.1)
        again = ServedNode(data_dir, "--workers", "2", log=tmp_path / "log2")
        served_nodes.append(again)
        assert again.request("GET", "/healthz")[0] == 200
        assert again.stop() == 0


class TestWorkerMetrics:
    def test_a_worker_exports_the_sync_health_the_supervisor_publishes(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """With --workers 2 the sync worker runs in the supervisor, which serves no HTTP; a
        worker's /metrics still shows each PostgreSQL shard: down, with its failures."""
        data_dir = tmp_path / "data"
        unreachable = '["postgresql://sync@127.0.0.1:1/central?connect_timeout=1"]'
        node = ServedNode(
            data_dir,
            "--workers",
            "2",
            notify=notify,
            env={**clean_environment(), "EDGE_NODE_CENTRAL_DSNS": unreachable},
            log=tmp_path / "log",
        )
        served_nodes.append(node)
        notify.wait_for("READY")
        shard = frozenset({("target", "postgresql"), ("name", "shard-0")})
        deadline = time.monotonic() + 30
        samples = scrape(node.url)
        while samples.get(("edge_node_sync_consecutive_failures", shard), 0) < 1:
            assert time.monotonic() < deadline, sorted(k for k in samples if "sync" in k[0])
            time.sleep(0.2)
            samples = scrape(node.url)
        assert samples[("edge_node_sync_up", shard)] == 0
        assert node.stop() == 0


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_samples(response.read().decode())
