"""The notify protocol: datagrams to NOTIFY_SOCKET, watchdog pings from the event loop."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.cli.sd_notify import ServiceNotifier
from edge_node.config import ServiceEnvironment, service_environment
from edge_node.errors import ConfigError
from tests.served import NotifyListener


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    listening = NotifyListener(str(tmp_path / "notify.sock"))
    yield listening
    listening.close()


@pytest.fixture
def notifiers() -> Iterator[list[ServiceNotifier]]:
    """Notifiers a test makes, closed after it."""
    made: list[ServiceNotifier] = []
    yield made
    for notifier in made:
        notifier.close()


def make(notifiers: list[ServiceNotifier], socket: str = "", usec: int = 0) -> ServiceNotifier:
    notifiers.append(ServiceNotifier(ServiceEnvironment(socket, usec)))
    return notifiers[-1]


class TestServiceEnvironment:
    def test_notify_socket_and_watchdog_come_from_the_environment(self) -> None:
        """NOTIFY_SOCKET and WATCHDOG_USEC are read by config.service_environment."""
        env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "30000000"}
        assert service_environment(env) == ServiceEnvironment("/run/x.sock", 30_000_000)

    def test_a_watchdog_meant_for_another_pid_is_ignored(self) -> None:
        """WATCHDOG_PID naming another process leaves this one without a watchdog."""
        env = {"NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid() + 1)}
        assert service_environment(env).watchdog_usec == 0
        env["WATCHDOG_PID"] = str(os.getpid())
        assert service_environment(env).watchdog_usec == 1000

    def test_a_malformed_watchdog_period_is_a_configuration_error(self) -> None:
        """WATCHDOG_USEC that is not a number is refused with a message naming it."""
        with pytest.raises(ConfigError, match="WATCHDOG_USEC"):
            service_environment({"WATCHDOG_USEC": "soon"})


class TestServiceNotifier:
    def test_messages_reach_a_socket_file(
        self, listener: NotifyListener, notifiers: list[ServiceNotifier]
    ) -> None:
        """READY, STATUS and STOPPING arrive as datagrams of KEY=value lines."""
        notifier = make(notifiers, listener.name)
        notifier.ready("serving")
        notifier.status("busy")
        notifier.stopping("bye")
        assert [listener.receive(1), listener.receive(1), listener.receive(1)] == [
            {"READY": "1", "STATUS": "serving"},
            {"STATUS": "busy"},
            {"STOPPING": "1", "STATUS": "bye"},
        ]

    def test_messages_reach_an_abstract_socket(self, notifiers: list[ServiceNotifier]) -> None:
        """A NOTIFY_SOCKET starting with @ names a socket in the abstract namespace."""
        abstract = NotifyListener(f"@edge-node-test-{uuid.uuid4().hex}")
        try:
            make(notifiers, abstract.name).ready("up")
            assert abstract.receive(1) == {"READY": "1", "STATUS": "up"}
        finally:
            abstract.close()

    def test_without_a_socket_nothing_is_sent_and_nothing_fails(
        self, notifiers: list[ServiceNotifier]
    ) -> None:
        """With no NOTIFY_SOCKET (a terminal) every call is a no-op, and there is no watchdog."""
        notifier = make(notifiers)
        notifier.ready("x")
        assert (notifier.enabled, notifier.watchdog_interval) == (False, None)

    def test_a_vanished_socket_does_not_raise(
        self, tmp_path: Path, notifiers: list[ServiceNotifier]
    ) -> None:
        """A service manager that went away makes sends fail quietly, never the caller."""
        make(notifiers, str(tmp_path / "gone.sock")).ready("x")

    async def test_watchdog_pings_come_from_the_event_loop(
        self, listener: NotifyListener, notifiers: list[ServiceNotifier]
    ) -> None:
        """Pings go out at half the watchdog period while the loop turns, and none while the
        loop is blocked: a stuck loop is what the watchdog catches."""
        notifier = make(notifiers, listener.name, 100_000)
        assert notifier.watchdog_interval == pytest.approx(0.05)
        task = asyncio.create_task(notifier.run_watchdog())
        await asyncio.sleep(0.3)
        listener.drain()
        turning = listener.count("WATCHDOG")
        time.sleep(0.3)  # noqa: ASYNC251 - the loop is stuck on purpose: no ping may go out
        blocked_at = len(listener.messages)
        listener.drain()
        stuck = len(listener.messages) - blocked_at
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert turning >= 4
        assert stuck <= 1  # at most the ping already due when the loop got stuck
