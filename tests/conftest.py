"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_node.metrics.node import NodeMetrics
from sync.stripe.standin import StripeStandin
from tests.citus import CitusCluster, CitusUnavailable, start_cluster
from tests.postgres import PostgresServer, PostgresUnavailable, start_server, start_standby
from tests.served import NotifyListener, ServedNode
from tests.support import RunningNode, SigningKeys, make_signing_keys, node_config, start_node


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return make_signing_keys(tmp_path_factory.mktemp("keys"))


NodeFactory = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def make_node(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[NodeFactory]:
    """Starts edge nodes on loopback with configuration overrides (dotted keys); stops them all."""
    started: list[tuple[RunningNode, web.AppRunner]] = []

    async def start(
        *,
        fsync: Callable[[int], None] = os.fsync,
        metrics: NodeMetrics | None = None,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> RunningNode:
        data_dir = tmp_path / f"var{len(started)}"
        config = node_config(data_dir, signing_keys, **overrides)
        running, runner = await start_node(
            config, signing_keys, fsync=fsync, metrics=metrics, clock=clock
        )
        started.append((running, runner))
        return running

    yield start
    for running, runner in reversed(started):
        await running.session.close()
        await runner.cleanup()
        await running.meter.close()
        running.storage.close()


@pytest.fixture
async def node(make_node: NodeFactory) -> RunningNode:
    """A fresh edge node on loopback with its own data directory and default configuration."""
    return await make_node()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the session (tests/postgres.py); none means failure, not skip."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        message = f"cannot start the test PostgreSQL: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_standby(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A hot standby streaming from the session's PostgreSQL (pg_basebackup -R); its
    databases are the primary's, a moment later."""
    try:
        standby = start_standby(postgres_server)
    except PostgresUnavailable as exc:
        raise pytest.fail.Exception(f"cannot start the standby: {exc}", pytrace=False) from None
    yield standby
    standby.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN (superuser, over TCP) to a fresh empty database, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.dsn(name)
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_dsns(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """DSNs to two fresh empty databases on the test server, as two shards."""
    names = (postgres_server.create_database(), postgres_server.create_database())
    yield postgres_server.dsn(names[0]), postgres_server.dsn(names[1])
    for name in names:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    """A private Citus cluster for the session: a coordinator and two workers (tests/citus.py).
    Skipped, with the reason, where Citus cannot be had (not root, no source); a failure
    instead where REQUIRE_CITUS=1 is set."""
    try:
        cluster = start_cluster()
    except (CitusUnavailable, PostgresUnavailable) as exc:
        message = f"no Citus cluster: {exc}"
        if os.environ.get("REQUIRE_CITUS") == "1":
            raise pytest.fail.Exception(message, pytrace=False) from None
        pytest.skip(message)
    yield cluster
    cluster.stop()


@pytest.fixture
def citus_dsn(citus_cluster: CitusCluster) -> Iterator[str]:
    """A DSN to the coordinator of a fresh distributed database (workers added), dropped after."""
    name = citus_cluster.create_database()
    yield citus_cluster.dsn(name)
    citus_cluster.drop_database(name)


@pytest.fixture
async def standin() -> AsyncIterator[StripeStandin]:
    """A fresh Stripe stand-in in this process, on a free loopback port."""
    server = StripeStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    """A unix datagram socket to hand a daemon as NOTIFY_SOCKET, as systemd would."""
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


@pytest.fixture
def served_nodes() -> Iterator[list[ServedNode]]:
    """`edge-node serve` processes a test starts; any still running afterwards are killed."""
    started: list[ServedNode] = []
    yield started
    for node in started:
        node.kill()
