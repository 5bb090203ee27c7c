"""Listening sockets drained of many connections per turn of the event loop.

libuv, under uvloop, accepts one connection each time its loop polls a listening socket
(libuv 1.45, "unix: don't accept() connections in a loop"). A node busy with many
connections takes several milliseconds a turn, so a burst of new ones (clients reconnecting
after a restart, a proxy opening its pool) waits one turn per connection, and the first
request of each with it: measured with 256 connections of load, 250 new connections waited
up to 1.2 s to be accepted, and the p99 of the whole run went past a second.

Here the loop watches the listening socket as a reader and, each time it is readable,
accepts up to a burst of connections (ACCEPT_BURST; SHARED_ACCEPT_BURST on a socket the
supervisor's workers share, so that one worker does not take a whole burst of reconnects)
and hands each to the loop (`loop.connect_accepted_socket`, TLS handshake included), as
asyncio's own loop does. A connection's own failure reported by accept (it was reset, its
network went away) skips it. When the process runs out of descriptors or memory (EMFILE,
ENFILE, ENOBUFS, ENOMEM), or the socket fails otherwise, accepting pauses for
ACCEPT_RETRY_SECONDS rather than spin: the connections wait in the kernel's queue meanwhile,
and the ones already open go on being served.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

ACCEPT_BURST = 64  # connections accepted per readiness of a socket of this process's own
SHARED_ACCEPT_BURST = 8  # the same on the supervisor's socket, which every worker polls
ACCEPT_RETRY_SECONDS = 0.1  # pause after running out of descriptors or memory
PAUSE_LOG_EVERY_SECONDS = 10.0  # a pause that goes on is logged again this often
# How long stopping waits for connections still being set up (a TLS handshake) before
# dropping them: once set up they are the server's, and its drain answers them.
HANDOVER_WAIT_SECONDS = 2.0
PICK_ATTEMPTS = 8  # ports picked for a host of several addresses before giving up
# Errors of the one pending connection, not of the socket (accept(2), Linux notes): skipped.
_CONNECTION_ERRORS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENONET,
        errno.ENOPROTOOPT,
        errno.EOPNOTSUPP,
        errno.EPERM,
    }
)
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def open_listeners(
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    defer_accept_seconds: int = 0,
) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to ("" for all interfaces) and
    `port`, as the loop's create_server makes them (IPv6 sockets IPv6 only); with
    `defer_accept_seconds`, a connection is accepted once its first bytes are in, or once
    that many seconds have passed without any (TCP_DEFER_ACCEPT).

    Port 0 picks one port for every address: the one the first address is given, taken on
    the others too (picked again, up to PICK_ATTEMPTS times, when another program holds it
    on one of them), where create_server would give each address a port of its own."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys(found))
    for _ in range(PICK_ATTEMPTS):
        try:
            return _open(addresses, port, backlog, reuse_port, defer_accept_seconds)
        except _PickedPortTaken:
            pass
    raise OSError(
        errno.EADDRINUSE,
        f"cannot listen on one port on every address of {host!r}: the port picked was in use"
        f" on one of them {PICK_ATTEMPTS} times",
    )


def listener_url(listener: socket.socket, *, tls: bool) -> str:
    """The URL of a listening socket's address (an IPv6 one in brackets)."""
    host, port = listener.getsockname()[:2]
    return str(URL.build(scheme="https" if tls else "http", host=host, port=port))


class _PickedPortTaken(Exception):
    """The port picked for the first address is in use on another."""


def _open(
    addresses: list[Any], port: int, backlog: int, reuse_port: bool, defer_accept: int
) -> list[socket.socket]:
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            picked = port == 0 and len(listeners) > 1  # the port the first address was given
            target = (
                (address[0], listeners[0].getsockname()[1], *address[2:]) if picked else address
            )
            try:
                _listen(listener, target, backlog, reuse_port, defer_accept)
            except OSError as exc:
                if picked and exc.errno == errno.EADDRINUSE:
                    raise _PickedPortTaken from None
                raise
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _listen(
    listener: socket.socket, address: Any, backlog: int, reuse_port: bool, defer_accept: int
) -> None:
    """Set `listener` up and make it listen on `address`; an OSError naming the address."""
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if defer_accept:
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
        listener.bind(address)
        listener.listen(backlog)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise OSError(exc.errno, f"cannot listen on address {address!r}: {reason}") from None


class BurstAcceptor(asyncio.AbstractServer):
    """Accepts connections on one listening socket, up to `burst` at a time, each served by
    a protocol from `protocol_factory` (the server's `sockets` and `close` are what
    aiohttp's sites and runners use)."""

    def __init__(
        self,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext | None,
        burst: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._burst = burst
        self._fd = listener.fileno()
        self._watching = False
        self._closed = False
        self._resume: asyncio.TimerHandle | None = None
        self._logged_pause_at: float | None = None  # while paused: when it was last logged
        self._handing_over: set[asyncio.Task[Any]] = set()
        self.pauses = 0  # times accepting paused, since the start
        listener.setblocking(False)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._listener,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._watching

    async def start_serving(self) -> None:
        if not self._closed:
            self._watch()

    async def serve_forever(self) -> None:
        raise NotImplementedError("a ListenerSite starts and stops the acceptor")

    def close(self) -> None:
        """Stop accepting and close the listening socket (wait_closed then settles the
        connections still being handed over)."""
        if self._closed:
            return
        self._closed = True
        self._stop_watching()
        if self._resume is not None:
            self._resume.cancel()
        self._listener.close()

    async def wait_closed(self) -> None:
        """Let the connections still being set up finish (within HANDOVER_WAIT_SECONDS,
        then they are dropped): once set up they are the server's, and its drain answers
        them."""
        if not self._handing_over:
            return
        _, late = await asyncio.wait(self._handing_over, timeout=HANDOVER_WAIT_SECONDS)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _accept(self) -> None:
        for _ in range(self._burst):
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left
            except OSError as exc:
                if exc.errno in _CONNECTION_ERRORS:
                    continue
                self._pause(exc)
                return
            if self._logged_pause_at is not None:
                self._logged_pause_at = None
                log.warning("accepting connections again")
            connection.setblocking(False)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._factory, connection, ssl=self._ssl)
            )
            self._handing_over.add(task)
            task.add_done_callback(self._handed_over)

    def _handed_over(self, task: asyncio.Task[Any]) -> None:
        self._handing_over.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The transport closed the connection (a failed TLS handshake, a reset).
            log.debug("connection not set up: %r", exc)

    def _pause(self, exc: OSError) -> None:
        """Stop accepting for ACCEPT_RETRY_SECONDS: descriptors or memory ran out, or the
        socket failed. Logged when it begins and then every PAUSE_LOG_EVERY_SECONDS."""
        self.pauses += 1
        now = self._loop.time()
        if self._logged_pause_at is None or now - self._logged_pause_at >= PAUSE_LOG_EVERY_SECONDS:
            self._logged_pause_at = now
            level = logging.WARNING if exc.errno in _SHORTAGES else logging.ERROR
            log.log(level, "not accepting connections for %.1f s: %s", ACCEPT_RETRY_SECONDS, exc)
        self._stop_watching()
        self._resume = self._loop.call_later(ACCEPT_RETRY_SECONDS, self._watch_again)

    def _watch_again(self) -> None:
        self._resume = None
        if not self._closed:
            self._watch()

    def _watch(self) -> None:
        if not self._watching:
            self._loop.add_reader(self._fd, self._accept)
            self._watching = True

    def _stop_watching(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False


class ListenerSite(web.BaseSite):
    """An aiohttp site serving the runner's app on a listening socket through a
    BurstAcceptor, accepting up to `burst` connections at a time."""

    __slots__ = ("_burst", "_listener", "_name")

    def __init__(
        self,
        runner: web.BaseRunner,
        listener: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None = None,
        burst: int = ACCEPT_BURST,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._listener = listener
        self._burst = burst
        self._name = listener_url(listener, tls=ssl_context is not None)

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        acceptor = BurstAcceptor(self._listener, server, self._ssl_context, self._burst)
        await acceptor.start_serving()
        self._server = acceptor

    async def stop(self) -> None:
        """Stop accepting; the connections being set up are handed to the server first."""
        acceptor = self._server
        await super().stop()
        if acceptor is not None:
            await acceptor.wait_closed()
