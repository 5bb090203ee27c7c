"""Test support: `edge-node serve` as a subprocess under a stand-in service manager.

`NotifyListener` is the unix datagram socket a test hands the daemon as NOTIFY_SOCKET, as
systemd would; `ServedNode` starts the daemon with it and reads the URL it announces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from re import Pattern
from typing import Any

from tests.cli.test_cli import LISTENING, announced_url, clean_environment, edge_node_command

ANNOUNCE_TIMEOUT_SECONDS = 30.0


class NotifyListener:
    """Receives the daemon's notify datagrams; each message is kept as a dict of its fields."""

    def __init__(self, address: str) -> None:
        self.name = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = b"\0" + address[1:].encode() if address.startswith("@") else address
        self._socket.bind(bind_to)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next message, or None when none came within `timeout` seconds."""
        self._socket.settimeout(timeout)
        try:
            data = self._socket.recv(65536)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(fields)
        return fields

    def wait_for(self, field: str, value: str = "1", timeout: float = 30.0) -> dict[str, str]:
        """Wait for a message whose `field` is `value` (already received ones included)."""
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if message.get(field) == value:
                return message
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message.get(field) == value:
                return message
        raise AssertionError(f"no {field}={value} in {timeout} s; received {self.messages}")

    def drain(self) -> None:
        """Take every message already waiting."""
        while self.receive(0.01) is not None:
            pass

    def count(self, field: str, value: str = "1") -> int:
        return sum(1 for message in self.messages if message.get(field) == value)

    def close(self) -> None:
        self._socket.close()


class ServedNode:
    """A running `edge-node --data-dir D [--config F] serve --port 0 [extra]` process."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        config: Path | None = None,
        notify: NotifyListener | None = None,
        watchdog_usec: int | None = None,
        env: dict[str, str] | None = None,
        log: Path,
        cwd: Path | None = None,
        announced: Pattern[str] = LISTENING,
    ) -> None:
        options = ["--data-dir", str(data_dir)] + (
            [] if config is None else ["--config", str(config)]
        )
        variables = dict(env or clean_environment())
        if notify is not None:
            variables["NOTIFY_SOCKET"] = notify.name
        if watchdog_usec is not None:
            variables["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*edge_node_command(), *options, "serve", "--port", "0", *extra],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=variables,
                cwd=cwd,
            )
        try:
            self.url = announced_url(self.process, self.log, ANNOUNCE_TIMEOUT_SECONDS, announced)
        except BaseException:
            self.kill()
            raise

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(
            self.url + path, data=data, headers=all_headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None, dict(response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read()), dict(error.headers)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (the workers of a supervisor)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
