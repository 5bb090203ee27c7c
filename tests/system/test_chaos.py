"""The whole system under faults: three edge-node daemons, PostgreSQL and the Stripe stand-in,
real load over HTTP, fault schedules from outside, and the checker after each schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import PostgresServer
from tests.system.chaos import ChaosSettings, run_chaos
from tests.system.faults import SCHEDULES


async def _run(tmp_path: Path, postgres: PostgresServer, settings: ChaosSettings) -> None:
    lines: list[str] = []
    report = await run_chaos(tmp_path / "chaos", postgres, settings, emit=lines.append)
    print("\n".join(lines))
    assert report.ok, "\n".join(lines)
    assert len(report.verdicts) == settings.rounds * len(settings.schedules)


async def test_a_short_mixed_schedule_keeps_every_guarantee(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Nodes SIGKILLed and restarted, PostgreSQL and Stripe cut off, slowed and losing answers
    (separately and together) and a clock jumping forward, all at once for 15 s under load:
    afterwards every acknowledged rating is on every replica, every tenant is billed exactly
    its acknowledged requests, no response crossed tenants, no unexpected 5xx, and the
    cluster settled within the bound."""
    settings = ChaosSettings(duration=15, schedules=("mixed",), rate=60, seed=8)
    await _run(tmp_path, postgres_server, settings)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", [name for name in SCHEDULES if name != "mixed"])
async def test_each_schedule_alone_keeps_every_guarantee(
    tmp_path: Path, postgres_server: PostgresServer, schedule: str
) -> None:
    """Each fault schedule on its own for 20 s under load (kills, PostgreSQL faults, Stripe
    faults, both partitioned, a node's queue filled to 503, a clock jump) passes every check."""
    settings = ChaosSettings(duration=20, schedules=(schedule,), rate=80, seed=11)
    await _run(tmp_path, postgres_server, settings)
