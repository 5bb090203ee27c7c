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

The Python generator's worker process, `python -m bench.loadgen_worker SPEC`, is
bench/loadgen_worker.py; `run_python` starts one per load-generator CPU and merges them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from string import Template
from typing import Literal

from bench.processes import collect, spawn_pinned, stop

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
        command = [sys.executable, "-m", "bench.loadgen_worker", json.dumps(spec)]
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
