"""The service manager's notify protocol (sd_notify(3)): READY, WATCHDOG, STOPPING, STATUS.

Each message is one datagram of `KEY=value` lines sent to the unix socket named by
NOTIFY_SOCKET; a name starting with `@` is in the abstract namespace. systemd reads them for
a `Type=notify` unit, and the workers' supervisor reads its workers' the same way. Without a
socket every call does nothing, so the daemon runs the same under a terminal. A failed send
is logged once and never stops the node: the watchdog will tell if it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from edge_node.config import ServiceEnvironment

log = logging.getLogger(__name__)


def socket_address(name: str) -> str | bytes:
    """The address to send to: `@name` is the abstract socket `\\0name`."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class ServiceNotifier:
    """Sends notify messages to the service manager, and the watchdog pings while running."""

    def __init__(self, service: ServiceEnvironment) -> None:
        self._address = socket_address(service.notify_socket) if service.notify_socket else None
        self._watchdog_usec = service.watchdog_usec
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the watchdog timeout; None when there is no watchdog."""
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2e6

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self, status: str) -> None:
        """Announce a reload (SIGHUP); `ready()` tells it is done."""
        self.send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\nSTATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def send(self, message: str) -> None:
        """Send one datagram (newlines in a STATUS would start a new field: callers avoid it)."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at %r: %s", self._address, exc)
                self._failed = True
        else:
            self._failed = False

    async def run_watchdog(self) -> None:
        """Ping at half the watchdog timeout from the event loop, until cancelled: a loop that
        stops turning stops the pings, and the service manager restarts the process."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None
