"""`edge-node serve` under a service manager: notify, SIGTERM drain, SIGHUP reload, the lock."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import aiohttp
import jwt
import pytest

from edge_node.queue import tail_records
from edge_node.usage.event import UsageEvent
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.served import NotifyListener, ServedNode
from tests.support import ratelimit_fields


def create_tenant(data_dir: Path, *options: str) -> dict[str, str]:
    done = subprocess.run(
        [
            *edge_node_command(),
            "--data-dir",
            str(data_dir),
            *options,
            "tenants",
            "create",
            "--name",
            "acme",
        ],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=60,
        check=True,
    )
    created: dict[str, str] = json.loads(done.stdout)
    return created


class TestNotifications:
    def test_ready_watchdog_and_stopping_reach_the_notify_socket(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode]
    ) -> None:
        """READY=1 comes once the port answers, with a STATUS naming the URL; WATCHDOG=1 follows
        at half of WATCHDOG_USEC; SIGTERM sends STOPPING=1 and the exit status is 0."""
        node = ServedNode(
            tmp_path / "data", notify=notify, watchdog_usec=200_000, log=tmp_path / "log"
        )
        served_nodes.append(node)
        ready = notify.wait_for("READY")
        assert ready["STATUS"] == f"serving on {node.url}"
        assert node.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
        time.sleep(1.0)
        notify.drain()
        assert notify.count("WATCHDOG") >= 4
        assert node.stop() == 0
        notify.wait_for("STOPPING")
        assert "Traceback" not in node.log.read_text()


class TestShutdown:
    @pytest.mark.parametrize("workers", ["1", "2"])
    async def test_sigterm_under_load_loses_no_acknowledged_request(
        self, tmp_path: Path, notify: NotifyListener, served_nodes: list[ServedNode], workers: str
    ) -> None:
        """Clients keep writing while SIGTERM arrives (to the single process, or to the
        supervisor of two workers): in-flight requests are drained, the exit status is 0, and
        every rating acknowledged is stored with its usage event on a worker's queue."""
        data_dir = tmp_path / "data"
        tenant = create_tenant(data_dir)
        node = ServedNode(data_dir, "--workers", workers, notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        acknowledged = await write_until_stopped(node, tenant, signal_after=300)
        exit_status = await asyncio.to_thread(node.process.wait, 30)
        assert exit_status == 0, node.log.read_text()
        notify.wait_for("STOPPING")
        assert len(acknowledged) >= 300
        stored = stored_items(data_dir, tenant["tenant_id"])
        assert acknowledged <= stored
        events = [
            UsageEvent.decode(record.payload)
            for directory in sorted((data_dir / "queue").glob("worker-*"))
            for record in tail_records(directory, 1_000_000)
        ]
        assert sum(event.operation == "rating.create" for event in events) == len(stored)
        assert "Traceback" not in node.log.read_text()


async def write_until_stopped(
    node: ServedNode, tenant: dict[str, str], *, signal_after: int, clients: int = 16
) -> set[str]:
    """Rating writes from `clients` connections; SIGTERM once `signal_after` are acknowledged;
    the items whose write was acknowledged (201) once the node stops answering."""
    acknowledged: set[str] = set()
    url = f"{node.url}/v1/tenants/{tenant['tenant_id']}/ratings"
    headers = {"X-API-Key": tenant["api_key"]}
    signalled = asyncio.Event()

    async def client(number: int, session: aiohttp.ClientSession) -> None:
        for sequence in range(100_000):
            item = f"item-{number}-{sequence}"
            body = {"user_id": "u", "item_id": item, "score": 4}
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    if response.status == 201:
                        acknowledged.add(item)
            except (aiohttp.ClientError, ConnectionError):
                if signalled.is_set():
                    return
                raise
            if len(acknowledged) >= signal_after and not signalled.is_set():
                signalled.set()
                node.signal(signal.SIGTERM)

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.wait_for(
            asyncio.gather(*(client(n, session) for n in range(clients))), timeout=60
        )
    return acknowledged


def stored_items(data_dir: Path, tenant_id: str) -> set[str]:
    path = data_dir / "tenants" / f"{tenant_id}.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT item_id FROM ratings")}


class TestReload:
    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_sighup_picks_up_a_rotated_jwt_secret_and_the_rate_limit(
        self,
        tmp_path: Path,
        notify: NotifyListener,
        served_nodes: list[ServedNode],
        workers: str,
    ) -> None:
        """After the JWT secret file is rotated and rate_limit.per_minute changed in the config
        file, SIGHUP (to the single process, or forwarded by the supervisor to every worker)
        makes the node accept tokens of the new secret only and apply the new limit, and logs
        a changed setting that needs a restart as such."""
        data_dir = tmp_path / "data"
        secret_file, config = tmp_path / "jwt.secret", tmp_path / "edge-node.toml"
        old_secret, new_secret = "old-secret-" + "a" * 32, "new-secret-" + "b" * 32
        secret_file.write_text(old_secret + "\n")
        write_config(config, secret_file, per_minute=100, max_body_bytes=16384)
        tenant = create_tenant(data_dir)
        node = ServedNode(
            data_dir, "--workers", workers, config=config, notify=notify, log=tmp_path / "log"
        )
        served_nodes.append(node)
        notify.wait_for("READY")
        path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"

        def read_with(secret: str) -> tuple[int, str | None]:
            token = jwt.encode(
                {"tenant_id": tenant["tenant_id"], "role": "reader", "exp": time.time() + 60},
                secret,
                algorithm="HS256",
            )
            status, _, headers = node.request("GET", path, {"Authorization": f"Bearer {token}"})
            policies = ratelimit_fields(headers, "RateLimit-Policy") if status == 200 else {}
            return status, str(policies["minute"]["q"]) if policies else None

        assert read_with(old_secret) == (200, "100")
        secret_file.write_text(new_secret + "\n")
        write_config(config, secret_file, per_minute=50, max_body_bytes=32768)
        assert read_with(new_secret)[0] == 401  # nothing changes before the signal
        node.signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        notify.messages.clear()
        notify.wait_for("READY")
        if workers != "1":  # each worker reloads on its own: wait until all answer anew
            wait_until(lambda: all(read_with(new_secret)[0] == 200 for _ in range(20)))
        for _ in range(int(workers) * 10):  # a new connection each: every worker is asked
            assert read_with(new_secret) == (200, "50")
            assert read_with(old_secret)[0] == 401
        assert node.stop() == 0
        log = node.log.read_text()
        assert "need a restart: server.max_body_bytes" in log
        assert new_secret not in log
        assert old_secret not in log


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def write_config(path: Path, secret_file: Path, *, per_minute: int, max_body_bytes: int) -> None:
    path.write_text(
        f"[server]\nmax_body_bytes = {max_body_bytes}\n"
        f"[rate_limit]\nper_minute = {per_minute}\n"
        f'[auth.jwt]\nkeys = [{{ algorithm = "HS256", file = "{secret_file}" }}]\n'
    )


class TestInstanceLock:
    @pytest.mark.parametrize(
        ("first", "second"), [((), ("--workers", "2")), (("--workers", "2"), ())]
    )
    def test_a_second_instance_on_the_data_dir_refuses_to_start(
        self,
        tmp_path: Path,
        served_nodes: list[ServedNode],
        first: tuple[str, ...],
        second: tuple[str, ...],
    ) -> None:
        """Whichever of a single process and a supervisor serves the data dir first, the other
        exits 75 with a message saying so, and the first keeps serving."""
        data_dir = tmp_path / "data"
        node = ServedNode(data_dir, *first, log=tmp_path / "log")
        served_nodes.append(node)
        refused = subprocess.run(
            [*edge_node_command(), "--data-dir", str(data_dir), "serve", "--port", "0", *second],
            capture_output=True,
            text=True,
            env=clean_environment(),
            timeout=60,
            check=False,
        )
        assert refused.returncode == 75, refused.stderr
        assert "already serving from this data directory" in refused.stderr
        assert f"{data_dir} is served by process {node.process.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert node.request("GET", "/healthz")[0] == 200
        assert node.stop() == 0
