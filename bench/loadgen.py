"""Load generators for the HTTP benchmark: wrk when installed, else a Python keep-alive client.

Both drive one `Target` for a fixed time over keep-alive connections, one request in flight
per connection, and return a `Measurement`. Request bodies come from a body template: a
string whose `{name}` placeholders are filled per request from its counter, identically in
Python and in wrk's Lua, so a scenario defines its bodies once for either generator:

    stream  unique per run and per wrk thread (wrk) or per connection (Python)
    n       the request's number within its stream, from 0
    pair    n // 2: two consecutive requests share it (the first creates, the second updates)
    score   n % 5 + 1
    slot    pair % 64

`python -m bench.loadgen SPEC` is the Python generator's worker process: it takes a JSON spec
as its argument and prints one JSON result on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal

PLACEHOLDER = re.compile(r"\{([a-z]+)\}")
VARIABLES = frozenset({"stream", "n", "pair", "score", "slot"})
RESULT_MARK = "BENCH_RESULT "

GeneratorName = Literal["wrk", "python"]


@dataclass(frozen=True)
class Target:
    """One kind of request against one server, repeated for the whole measurement."""

    host: str
    port: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: str | None = None  # a body template (see the module docstring), or no body

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Measurement:
    """What a generator saw: answers counted whatever their status, latencies in ms."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu: float | None = None  # share of its CPU the server used meanwhile
    others_cpu: float | None = None  # share of the server's CPU other processes used meanwhile

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU time per answer: steadier than requests/s when the machine is busy."""
        if self.server_cpu is None or not self.requests:
            return None
        return self.server_cpu * self.seconds * 1e6 / self.requests


def check_template(template: str) -> None:
    unknown = set(PLACEHOLDER.findall(template)) - VARIABLES
    if unknown:
        raise ValueError(f"unknown body placeholders {sorted(unknown)}; use {sorted(VARIABLES)}")


def render_body(template: str, stream: str, n: int) -> bytes:
    pair = n // 2
    values = {"stream": stream, "n": n, "pair": pair, "score": n % 5 + 1, "slot": pair % 64}
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template).encode()


def spawn_pinned(command: list[str], cpus: set[int] | None, **popen: Any) -> subprocess.Popen[Any]:
    """Start `command` on `cpus` (None: anywhere); the mask is inherited before any thread."""
    if cpus is None:
        return subprocess.Popen(command, **popen)
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return subprocess.Popen(command, **popen)
    finally:
        os.sched_setaffinity(0, saved)


def collect(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float) -> str:
    """The process's stdout once it exits; it is killed if it outlives `timeout` or we stop."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        stop(process)
    return out.decode() if isinstance(out, bytes) else out


def stop(process: subprocess.Popen[Any], grace: float = 0) -> None:
    """End `process`: SIGTERM and up to `grace` seconds to exit, then SIGKILL."""
    if grace and process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    if process.poll() is None:
        process.kill()
        process.wait()


def cpu_seconds(pid: int, cpus: set[int]) -> tuple[float, float]:
    """CPU time used so far by process `pid` (all threads), and by anything on `cpus`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = int(fields[11]) + int(fields[12])
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name[3:].isdigit() and name.startswith("cpu") and int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            busy += sum(int(tick) for tick in ticks[:8]) - int(ticks[3]) - int(ticks[4])
    tick = os.sysconf("SC_CLK_TCK")
    return own / tick, busy / tick


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """The servers' CPU and the load generator's: the first CPU we may use, and the rest."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, set(allowed[1:])


def choose_generator(choice: str, wrk: str | None) -> GeneratorName:
    if choice == "wrk" and wrk is None:
        raise SystemExit("bench: --loadgen wrk, but wrk is not installed (apt-get install wrk)")
    return "wrk" if wrk is not None and choice != "python" else "python"


# ---------------------------------------------------------------------------------------- wrk

WRK_SCRIPT = Template("""
wrk.method = $method
wrk.headers = {}
$headers
local template = $template
local threads = {}
thread_no = 0

function setup(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

if template then
  local n = 0
  function request()
    local pair = math.floor(n / 2)
    local values = {stream = $tag .. "-" .. thread_no, n = string.format("%d", n),
                    pair = string.format("%d", pair), score = string.format("%d", n % 5 + 1),
                    slot = string.format("%d", pair % 64)}
    n = n + 1
    return wrk.format(nil, nil, nil, (template:gsub("{(%l+)}", values)))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('$mark{"requests": %d, "duration_us": %d, "p50_us": %.1f, ' ..
    '"p99_us": %.1f, "status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
""")


def wrk_version() -> str | None:
    """wrk's version line, or None when wrk is not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    shown = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    words = (shown.stdout or shown.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def lua_string(text: str) -> str:
    """`text` as a Lua string literal: printable ASCII as is, every other byte as `\\ddd`."""
    escaped = "".join(
        chr(byte) if 32 <= byte < 127 and byte not in b'"\\' else f"\\{byte:03d}"
        for byte in text.encode()
    )
    return f'"{escaped}"'


def wrk_script(target: Target, tag: str) -> str:
    headers = "\n".join(
        f"wrk.headers[{lua_string(name)}] = {lua_string(value)}"
        for name, value in target.headers.items()
    )
    return WRK_SCRIPT.substitute(
        method=lua_string(target.method),
        headers=headers,
        template="nil" if target.body is None else lua_string(target.body),
        tag=lua_string(tag),
        mark=RESULT_MARK,
    )


def run_wrk(
    target: Target, *, connections: int, seconds: int, cpus: set[int] | None, tag: str
) -> Measurement:
    """One wrk run; non-2xx is wrk's own count of answers with a status of 400 or more."""
    threads = max(1, min(len(cpus or os.sched_getaffinity(0)), connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(wrk_script(target, tag))
        script.flush()
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        process = spawn_pinned(
            [*command, "-s", script.name, target.url], cpus, stdout=subprocess.PIPE, text=True
        )
        out = collect(process, timeout=seconds + 60)
    line = next((ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{out}")
    found = json.loads(line[len(RESULT_MARK) :])
    return Measurement(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        non_2xx=found["status"],
        socket_errors=sum(found[kind] for kind in ("connect", "read", "write", "timeout")),
    )


# ------------------------------------------------------------------------------------- Python


def run_python(
    target: Target, *, connections: int, seconds: int, cpus: set[int] | None, tag: str
) -> Measurement:
    """The Python generator: one worker process per load-generator CPU, results merged."""
    workers = max(1, min(len(cpus or {0}), connections))
    shares = [connections // workers + (i < connections % workers) for i in range(workers)]
    processes = []
    for index, share in enumerate(shares):
        spec = {**asdict(target), "connections": share, "seconds": seconds, "tag": f"{tag}-{index}"}
        command = [sys.executable, "-m", "bench.loadgen", json.dumps(spec)]
        processes.append(spawn_pinned(command, cpus, stdout=subprocess.PIPE))
    try:
        results = [json.loads(collect(p, timeout=seconds + 60)) for p in processes]
    finally:
        for process in processes:
            stop(process)
    latencies = sorted(ms for result in results for ms in result["latencies_ms"])
    statuses: Counter[str] = Counter()
    for result in results:
        statuses.update(result["statuses"])
    return Measurement(
        requests=len(latencies),
        seconds=max(result["seconds"] for result in results),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        non_2xx=sum(n for status, n in statuses.items() if not status.startswith("2")),
        socket_errors=sum(result["socket_errors"] for result in results),
    )


RUNNERS = {"wrk": run_wrk, "python": run_python}


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1)]


def parse_response(buffer: bytearray) -> tuple[int, int] | None:
    """(status, length) of the complete response at the start of `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    if b"transfer-encoding: chunked" in head:
        raise ValueError("chunked responses are not supported by the Python generator")
    start = head.find(b"\r\ncontent-length:")
    length = 0
    if start >= 0:
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else end])
    total = end + 4 + length
    return (int(head[9:12]), total) if len(buffer) >= total else None


class Tally:
    """Everything one worker process saw, across its connections."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.socket_errors = 0


class KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection sending the next request as soon as an answer arrives."""

    def __init__(self, requests: Iterator[bytes], tally: Tally, deadline: float) -> None:
        self._requests = requests
        self._tally = tally
        self._deadline = deadline
        self._buffer = bytearray()
        self._sent_at: float | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        now = time.perf_counter()
        if now >= self._deadline:
            self._sent_at = None
            self._transport.close()
            return
        self._sent_at = now
        self._transport.write(next(self._requests))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = parse_response(self._buffer)
        if answer is None or self._sent_at is None:
            return
        status, length = answer
        del self._buffer[:length]
        self._tally.latencies_ms.append((time.perf_counter() - self._sent_at) * 1000)
        self._tally.statuses[str(status)] += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sent_at is not None:  # the server closed while a request was in flight
            self._tally.socket_errors += 1
        if not self.finished.done():
            self.finished.set_result(None)


def request_stream(spec: Mapping[str, Any], stream: str) -> Iterator[bytes]:
    headers = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    head = f"{spec['method']} {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
    template = spec["body"]
    if template is None:
        request = f"{head}{headers}\r\n".encode()
        while True:
            yield request
    n = 0
    while True:
        body = render_body(str(template), stream, n)
        yield f"{head}{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body
        n += 1


async def drive(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Keep `connections` connections busy for `seconds`; the worker's raw result."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    started = time.perf_counter()
    deadline = started + spec["seconds"]
    connections = []
    for index in range(spec["connections"]):
        requests = request_stream(spec, f"{spec['tag']}-{index}")
        connect = functools.partial(KeepAliveConnection, requests, tally, deadline)
        _, protocol = await loop.create_connection(connect, spec["host"], spec["port"])
        connections.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(c.finished for c in connections)), timeout=60)
    return {
        "seconds": time.perf_counter() - started,
        "latencies_ms": tally.latencies_ms,
        "statuses": dict(tally.statuses),
        "socket_errors": tally.socket_errors,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["body"] is not None:
        check_template(spec["body"])
    try:
        import uvloop  # noqa: PLC0415 - the generator is faster on uvloop, and works without
    except ImportError:
        result = asyncio.run(drive(spec))
    else:
        result = uvloop.run(drive(spec))
    # The event loop may leave stdout non-blocking; the result (every latency) is far larger
    # than a pipe holds, and a non-blocking write would stop at the pipe's size.
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
