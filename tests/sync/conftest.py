"""Fixtures for sync tests: migrated central databases and edge nodes in their own data dirs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sync.central.schema import migrate_dsns
from sync.postgres import Connection, connect
from tests.sync.support import Edge

EdgeFactory = Callable[[str], Edge]


@pytest.fixture
async def central(postgres_dsn: str) -> str:
    """A DSN to a fresh database holding the central schema."""
    await migrate_dsns([postgres_dsn])
    return postgres_dsn


@pytest.fixture(params=["postgresql", "citus"])
async def any_central(request: pytest.FixtureRequest) -> str:
    """A fresh migrated central database, once on plain PostgreSQL and once on the Citus
    cluster (a coordinator's DSN; skipped where Citus cannot be had), for the guarantees that
    must hold on both."""
    dsn: str = request.getfixturevalue("citus_dsn" if request.param == "citus" else "postgres_dsn")
    await migrate_dsns([dsn])
    return dsn


@pytest.fixture
async def centrals(postgres_dsns: tuple[str, str]) -> tuple[str, str]:
    """Two fresh migrated databases: two shards."""
    await migrate_dsns(postgres_dsns)
    return postgres_dsns


@pytest.fixture
async def db(central: str) -> AsyncIterator[Connection]:
    """A connection to the central database, to look at and change it as an operator would."""
    conn = await connect(central)
    yield conn
    await conn.close()


@pytest.fixture
def make_edge(tmp_path: Path) -> Iterator[EdgeFactory]:
    """Opens edge nodes by node id, each in its own data directory; closes them all."""
    opened: list[Edge] = []

    def open_edge(node_id: str) -> Edge:
        edge = Edge.open(tmp_path / node_id, node_id)
        opened.append(edge)
        return edge

    yield open_edge
    for edge in opened:
        edge.close()
