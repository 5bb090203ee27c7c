"""A fault-injecting TCP proxy on loopback: the network between an edge node and a server.

Tests put it between an edge node and PostgreSQL or the Stripe stand-in and break the link
from outside, while connections are open:

- `cut()`: every open connection is dropped and new ones are refused, a partition;
  `heal()` listens again on the same port;
- `slow(seconds)`: every chunk, either way, is held back that long;
- `lossy(probability)`: each chunk the server sends back ends the connection instead,
  with that probability: the call was carried out and its answer is lost.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import weakref

REBIND_ATTEMPTS = 100  # 0.1 s apart


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, with faults a test switches."""

    def __init__(self, target_port: int, port: int = 0, *, seed: int | None = None) -> None:
        self.target_port = target_port
        self.port = port
        self.latency = 0.0
        self.loss = 0.0
        self.dropped = 0  # connections ended by `lossy`
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        # Bound and never listening: while the proxy is cut, connections to its port are
        # refused, and no client's ephemeral port can take it before `heal()`.
        self._placeholder: socket.socket | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The proxy as an HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def dsn(self, dsn: str) -> str:
        """`dsn` pointed at the proxy instead of the server."""
        return dsn.replace(f":{self.target_port}/", f":{self.port}/")

    async def heal(self) -> None:
        """Accept connections again (on the port it had), with no latency and no loss."""
        self.latency = 0.0
        self.loss = 0.0
        if self._placeholder is None:
            self._placeholder = _hold_port(self.port)
            self.port = self._placeholder.getsockname()[1]
            weakref.finalize(self, self._placeholder.close)  # for tests that only cut()
        for attempt in range(REBIND_ATTEMPTS):
            if self._server is not None:
                break
            try:
                self._server = await asyncio.start_server(
                    self._link, "127.0.0.1", self.port, reuse_address=True
                )
            except OSError as exc:  # a connection of the last listener is not gone yet
                if exc.errno != errno.EADDRINUSE or attempt + 1 == REBIND_ATTEMPTS:
                    raise
                await asyncio.sleep(0.1)

    async def cut(self) -> None:
        """Drop every open connection and refuse new ones until `heal()`."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def slow(self, seconds: float) -> None:
        self.latency = seconds

    def lossy(self, probability: float) -> None:
        self.loss = probability

    async def close(self) -> None:
        await self.cut()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)  # from the start, so a cut meanwhile drops it too
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            self._links.discard(writer)
            writer.transport.abort()
            return
        if writer.transport.is_closing():  # cut while connecting upstream
            upstream_writer.transport.abort()
            return
        self._links.add(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer, answers=False),
            self._pipe(upstream_reader, writer, answers=True),
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if answers and self.loss and self._rng.random() < self.loss:
                    self.dropped += 1
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(writer)
            writer.transport.abort()


def _hold_port(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:`port` (0: a free port) that a listener may share."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    return holder
