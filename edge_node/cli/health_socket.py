"""A supervised worker's private door: the app on an abstract unix socket only the host reaches.

A worker of `serve --workers N` serves the node's port through the listening sockets its
supervisor hands down, one per address (every worker accepts from those sockets, so a worker
that stops leaves no connection behind in a queue of its own). Before it takes a single
connection from them, the worker opens the same app on a health socket named by the
supervisor and asks its own `GET /readyz` there until it answers 200: a worker that is not
ready never serves the public port. The supervisor asks the same `/readyz` of each worker
of a new generation while it is on probation during an upgrade (edge_node/cli/upgrade.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

from aiohttp import web

from edge_node.web.accepting import SHARED_ACCEPT_BURST, ListenerSite

log = logging.getLogger(__name__)

VERSION_FIELD = "X_EDGE_NODE_VERSION"  # a worker's version, sent to its supervisor at READY
PROBE_TIMEOUT_SECONDS = 5.0  # a /readyz slower than this is not one to hand over to
READY_POLL_SECONDS = 0.2
SETTLE_TURNS = 3  # loop turns for connections already accepted to have their request read
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class WorkerSockets:
    """What a supervisor hands a worker: the descriptors of the node's listening sockets (none
    for a process serving on its own) and the name of the worker's health socket."""

    listen_fds: tuple[int, ...] = ()  # one per address the node listens on
    health_name: str | None = None


def abstract_address(name: str) -> bytes:
    """`@name` (or `name`) as the abstract unix socket address `\\0name`."""
    return b"\0" + name.removeprefix("@").encode()


async def open_health_site(runner: web.AppRunner, name: str) -> web.SockSite:
    """The app listening on the abstract unix socket `name`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(abstract_address(name))
    except BaseException:
        sock.close()
        raise
    site = web.SockSite(runner, sock)
    await site.start()
    return site


async def probe_readiness(name: str) -> str | None:
    """None when `GET /readyz` on health socket `name` answers 200, else why not."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            status, body = await _get_readyz(name)
    except (OSError, TimeoutError, ValueError) as exc:
        return f"/readyz did not answer: {exc or type(exc).__name__}"
    if status == 200:
        return None
    return f"/readyz answered {status}: {body[:300].decode(errors='replace')}"


async def _get_readyz(name: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET of /readyz over the abstract socket (connected here: not every event
    loop takes an abstract address by name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, abstract_address(name))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        writer.write(b"GET /readyz HTTP/1.0\r\nHost: worker\r\n\r\n")
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def wait_until_ready(name: str) -> None:
    """Ask `/readyz` on our own health socket until it answers 200, logging why not."""
    logged = 0.0
    loop = asyncio.get_running_loop()
    while (problem := await probe_readiness(name)) is not None:
        if loop.time() - logged >= LOG_EVERY_SECONDS:
            log.warning("not ready, not serving the node's port yet: %s", problem)
            logged = loop.time()
        await asyncio.sleep(READY_POLL_SECONDS)


async def stop_accepting(runner: web.AppRunner) -> None:
    """Stop accepting, then let the loop read the requests of the connections already
    accepted, before the runner's drain: aiohttp's drain ignores a request that arrives after
    it began, and closes that connection unanswered. (The supervisor's listening socket
    defers accepting a connection until its first bytes are in: generations.py.)"""
    for site in list(runner.sites):
        await site.stop()
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)


async def inherited_sites(
    runner: web.AppRunner, sockets: WorkerSockets, ssl_context: ssl.SSLContext | None
) -> list[ListenerSite]:
    """The sites on the supervisor's listening sockets (`sockets.listen_fds`, one per address),
    to be started once the worker is ready: its health socket is open, and its /readyz
    answered 200."""
    assert sockets.listen_fds
    if sockets.health_name is not None:
        await open_health_site(runner, sockets.health_name)
        await wait_until_ready(sockets.health_name)
    sites = []
    for fd in sockets.listen_fds:
        listener = socket.socket(fileno=fd)
        listener.set_inheritable(False)
        sites.append(
            ListenerSite(runner, listener, ssl_context=ssl_context, burst=SHARED_ACCEPT_BURST)
        )
    return sites
