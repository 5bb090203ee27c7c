"""Accepting connections: a burst is accepted in a few turns of a busy loop, and running out of
descriptors pauses accepting instead of dropping the connections that wait."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvloop
from aiohttp import web

from edge_node.web import accepting
from edge_node.web.accepting import BurstAcceptor, ListenerSite, open_listeners

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[int, ListenerSite]]:
    """An app on a ListenerSite of the node's kind; yields its port and the site."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    [listener] = open_listeners("127.0.0.1", 0)
    site = ListenerSite(runner, listener)
    await site.start()
    try:
        yield runner.addresses[0][1], site
    finally:
        await runner.cleanup()


def acceptor_of(site: ListenerSite) -> BurstAcceptor:
    server = site._server
    assert isinstance(server, BurstAcceptor)
    return server


def answer(sock: socket.socket) -> bytes:
    """The start of the answer to the GET sent on `sock`."""
    sock.settimeout(10)
    return sock.recv(64)


class TestBurst:
    def test_a_burst_of_connections_is_accepted_within_a_few_turns_of_a_busy_loop(self) -> None:
        """100 clients connecting at once to a loop whose every turn takes 2 ms of work (as
        under load) are all accepted and answered within a few turns, where accepting one
        connection per turn (libuv's own way) takes at least a hundred."""

        async def scenario() -> tuple[list[bytes], int]:
            turns = 0
            busy = True

            async def load() -> None:
                nonlocal turns
                while busy:
                    time.sleep(0.002)  # noqa: ASYNC251 - a turn's worth of other requests' work
                    turns += 1
                    await asyncio.sleep(0)

            async with serving() as (port, _):
                worker = asyncio.create_task(load())

                def clients() -> list[bytes]:
                    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
                    try:
                        for sock in sockets:
                            sock.sendall(REQUEST)
                        return [answer(sock) for sock in sockets]
                    finally:
                        for sock in sockets:
                            sock.close()

                await asyncio.sleep(0)
                before = turns
                answers = await asyncio.to_thread(clients)
                used = turns - before
                busy = False
                await worker
            return answers, used

        answers, used = uvloop.run(scenario())
        assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
        # A burst of 64: two readinesses, then the requests; a burst of 3 would take 34 turns.
        assert used <= 20, f"{used} turns of the loop to accept and answer 100 connections"


class TestDescriptorShortage:
    def test_running_out_of_descriptors_pauses_accepting_and_the_waiting_client_is_served(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A connection that arrives while the process has no descriptor left waits in the
        kernel's queue (no reset, no busy loop) and is answered once descriptors are free."""

        async def scenario() -> tuple[bytes, int]:
            async with serving() as (port, site):
                client = socket.socket()  # made while descriptors remain
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                fillers: list[int] = []
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (len(open_fds()) + 8, hard))
                    fillers = fill_descriptors()
                    await asyncio.to_thread(client.connect, ("127.0.0.1", port))
                    client.sendall(REQUEST)
                    await asyncio.sleep(3 * accepting.ACCEPT_RETRY_SECONDS)  # tries, pauses
                    client.setblocking(False)
                    with pytest.raises(BlockingIOError):  # not answered, not reset
                        client.recv(64)
                finally:
                    for fd in fillers:
                        socket.close(fd)
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                pauses = acceptor_of(site).pauses
                client.setblocking(True)
                client.settimeout(10)
                try:
                    return await asyncio.to_thread(client.recv, 64), pauses
                finally:
                    client.close()

        with caplog.at_level(logging.WARNING, logger=accepting.__name__):
            answer, pauses = uvloop.run(scenario())
        assert answer.startswith(b"HTTP/1.1 200")
        # One try per pause of 0.1 s in 0.3 s: neither spinning nor given up.
        assert 2 <= pauses <= 4
        assert caplog.text.count("not accepting connections") == 1  # logged once, not per try
        assert "accepting connections again" in caplog.text


class TestStop:
    def test_a_stopped_site_refuses_new_connections_and_lets_go_of_its_socket(self) -> None:
        """Once its site stops (a drain), the acceptor no longer watches the socket, the
        socket is closed and a new connection is refused; one made before is answered."""

        async def scenario() -> None:
            async with serving() as (port, site):
                early = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port))
                for _ in range(3):
                    await asyncio.sleep(0)  # accepted and handed over
                acceptor = acceptor_of(site)
                await site.stop()
                assert not acceptor.is_serving()
                assert acceptor.sockets == ()
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=5)
                early.sendall(REQUEST)
                assert (await asyncio.to_thread(answer, early)).startswith(b"HTTP/1.1 200")
                early.close()

        uvloop.run(scenario())


def open_fds() -> list[str]:
    return os.listdir("/proc/self/fd")


def fill_descriptors() -> list[int]:
    """Descriptors opened until the process has none left (EMFILE); the caller closes them."""
    fillers: list[int] = []
    with pytest.raises(OSError) as raised:  # noqa: PT012 - the loop ends in the error
        while True:
            fillers.append(socket.socket().detach())
    assert raised.value.errno == errno.EMFILE
    return fillers


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class TestAddresses:
    def test_port_0_picks_one_port_for_every_address(self) -> None:
        """A host of several addresses ("": every IPv4 and every IPv6 one) listens on one
        port picked for all, not a port per address."""
        if not ipv6_loopback():
            pytest.skip("this machine has no IPv6 loopback: a host of one address only")
        listeners = open_listeners("", 0)
        try:
            assert {listener.family for listener in listeners} == {
                socket.AF_INET,
                socket.AF_INET6,
            }
            assert len({listener.getsockname()[1] for listener in listeners}) == 1
        finally:
            for listener in listeners:
                listener.close()

    def test_a_picked_port_taken_on_another_address_is_picked_again(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the port picked for the first address is in use on the second, every socket
        is closed and a port is picked again; past PICK_ATTEMPTS the error says why."""
        if not ipv6_loopback():
            pytest.skip("this machine has no IPv6 loopback: a host of one address only")
        listen = accepting._listen
        refused: list[tuple[object, ...]] = []
        # Whichever family getaddrinfo lists second takes the port the first was given.
        second = socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[1][0]

        def taken_twice(
            listener: socket.socket, address: tuple[object, ...], *rest: object
        ) -> None:
            if listener.family == second and len(refused) < 2:
                refused.append(address)
                raise OSError(errno.EADDRINUSE, "in use")
            listen(listener, address, *rest)  # type: ignore[arg-type]

        monkeypatch.setattr(accepting, "_listen", taken_twice)
        listeners = open_listeners("", 0)
        try:
            assert len(refused) == 2
            assert len({listener.getsockname()[1] for listener in listeners}) == 1
        finally:
            for listener in listeners:
                listener.close()
        refused.clear()
        monkeypatch.setattr(accepting, "PICK_ATTEMPTS", 2)
        with pytest.raises(OSError, match="in use on one of them 2 times") as raised:
            open_listeners("", 0)
        assert raised.value.errno == errno.EADDRINUSE
