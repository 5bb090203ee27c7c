"""In-process request-path benchmark: the daemon's app against a minimal aiohttp app, no sockets.

`python -m bench.request_path` builds the real app as `edge-node serve` does (its storage, a
strict meter fsyncing its queue, the metrics and guards), and the minimal app of
`bench.minimal_app`, and drives each through aiohttp's own connection handler (parser,
the node's front, routing, handler, response writer) over in-memory transports: 64 connections,
each sending its next request as soon as its answer is written, as a keep-alive load
generator would. What is left out is the kernel: no socket reads or writes, no load
generator on the same cores, so a change of a few µs shows on a noisy machine.

Each scenario runs in a process of its own, with the minimal app beside it in the same
process: the two take turns in chunks of requests, so a busy spell on the machine falls on
both alike, and the ratio is read within that process. Rounds repeat that; the round with the
best ratio counts. `--against REV` runs the same on the code of a git revision (a temporary
worktree), in the same turns, so a before/after is read in one run. Figures: event-loop CPU
µs per request (the loop's thread only: the queue's fsyncs run in a thread of their own) of
each app, their ratio (minimal over edge-node), and edge-node's wall µs per request.

`--callgrind SCENARIO --app daemon|minimal` serves one app only and counts its instructions
under valgrind, which the machine's other work does not move (every thread's, the queue's
writer included): run it as `valgrind --tool=callgrind --instr-atstart=no
--callgrind-out-file=/dev/null python -m bench.request_path --callgrind get-score --app daemon
--requests 2560` and divide the "Collected" figure valgrind prints by the requests. Counting
is switched on after a warm-up of a quarter as many requests (`callgrind_control`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.in_memory import drive, get_request, post_request, repeat, running

ROOT = Path(__file__).resolve().parent.parent
ITEM = "bench-item"
LIST_PAGE = 50
SCENARIOS = ("get-score", "post-rating", "list-ratings", "write-then-list")
CHUNKS = 10  # turns the minimal app and the daemon take in one measurement
Figures = dict[str, Any]  # wall_us, cpu_us, minimal_wall_us, minimal_cpu_us, failures
Settings = dict[str, str]  # a setting's dotted name -> its value, as in the TOML file


def parse_settings(parser: argparse.ArgumentParser, pairs: list[str]) -> Settings:
    """`--set` values by setting name; an error for one that is not SETTING=VALUE or names no
    setting of this tree's configuration."""
    from edge_node.config import iter_settings  # noqa: PLC0415

    known = {name for name, _ in iter_settings()}
    settings: Settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or name not in known:
            parser.error(
                f"--set takes SETTING=VALUE with a setting of docs/configuration.md: {pair!r}"
            )
        settings[name] = value
    return settings


def post_requests(path: str, api_key: str) -> Iterator[bytes]:
    """Rating writes in pairs on one (user, item): the first creates, the second updates."""
    for number in range(10**9):
        body = (
            f'{{"user_id":"bench-{number // 2}","item_id":"item-{number // 2 % 100}",'
            f'"score":{number % 5 + 1}}}'
        ).encode()
        yield post_request(path, api_key, body)


def writes_then_pages(prefix: str, api_key: str) -> Iterator[bytes]:
    """By turns, a write replacing the score of one of the first page's ratings, and that
    page: every page is read after the tenant file changed, so the daemon serves none from
    its memory of answers, and makes again only the object of the row written."""
    page = get_request(f"{prefix}/ratings?item_id={ITEM}&limit={LIST_PAGE}", api_key)
    for number in range(10**9):
        body = (
            f'{{"user_id":"seed-{number % LIST_PAGE}","item_id":"{ITEM}","score":{number % 5 + 1}}}'
        ).encode()
        yield post_request(f"{prefix}/ratings", api_key, body)
        yield page


def minimal_requests(scenario: str) -> Iterator[bytes]:
    """The minimal app's requests of the same shape as the scenario's."""
    prefix = "/v1/tenants/8e0c2a4e-0000-4000-8000-000000000000"
    if scenario == "post-rating":
        return post_requests(f"{prefix}/ratings", "-")
    if scenario == "list-ratings":
        return repeat(get_request(f"{prefix}/ratings?item_id={ITEM}&limit={LIST_PAGE}", "-"))
    if scenario == "write-then-list":
        return writes_then_pages(prefix, "-")
    return repeat(get_request(f"{prefix}/items/{ITEM}/score", "-"))


async def seeded_daemon(
    data_dir: Path, settings: Settings | None = None
) -> tuple[Any, Any, Any, str, str]:
    """The daemon's app on a fresh data directory with one tenant and a page of ratings:
    (app, storage, meter, path prefix, API key); `settings` changes its configuration
    (setting name to value, as `--set meter.enabled=false`)."""
    from edge_node.config import env_name, load_config  # noqa: PLC0415
    from edge_node.http.app import NodeStorage, create_app  # noqa: PLC0415
    from edge_node.rating.model import parse_rating  # noqa: PLC0415
    from edge_node.usage.meter import open_meter  # noqa: PLC0415

    overrides = {env_name(name): value for name, value in (settings or {}).items()}
    config = load_config(environ={**overrides, "EDGE_NODE_DATA_DIR": str(data_dir)})
    storage = NodeStorage.open(config)
    tenant, key = storage.registry.create_tenant("bench", rate_limit_per_minute=10**9)
    store = storage.stores.get(tenant.tenant_id)
    for number in range(3 * LIST_PAGE):
        rating = {"user_id": f"seed-{number}", "item_id": ITEM, "score": number % 5 + 1}
        store.upsert(parse_rating({**rating, "comment": f"seeded comment number {number}"}))
    meter = await open_meter(config.meter, config.queue, data_dir / "queue" / "worker-0", "bench")
    app = create_app(config, storage, meter)
    return app, storage, meter, f"/v1/tenants/{tenant.tenant_id}", key.api_key


def daemon_requests(scenario: str, prefix: str, api_key: str) -> Iterator[bytes]:
    if scenario == "post-rating":
        return post_requests(f"{prefix}/ratings", api_key)
    if scenario == "list-ratings":
        return repeat(get_request(f"{prefix}/ratings?item_id={ITEM}&limit={LIST_PAGE}", api_key))
    if scenario == "write-then-list":
        return writes_then_pages(prefix, api_key)
    return repeat(get_request(f"{prefix}/items/{ITEM}/score", api_key))


async def measure_pair(
    scenario: str, count: int, connections: int, data_dir: Path, settings: Settings
) -> Figures:
    """The scenario and the minimal app's same requests, in alternating chunks in this process,
    so a busy spell on the machine falls on both alike."""
    from bench.minimal_app import create_app as minimal_app  # noqa: PLC0415

    app, storage, meter, prefix, api_key = await seeded_daemon(data_dir, settings)
    ours, theirs = daemon_requests(scenario, prefix, api_key), minimal_requests(scenario)
    totals = {"ours": [0.0, 0.0], "minimal": [0.0, 0.0]}
    failures = 0
    try:
        async with running(app) as server, running(minimal_app()) as baseline:
            await drive(server, ours, connections, count // 10)  # warm-up
            await drive(baseline, theirs, connections, count // 10)
            for _ in range(CHUNKS):
                for name, target, requests in (
                    ("minimal", baseline, theirs),
                    ("ours", server, ours),
                ):
                    figures = await drive(target, requests, connections, count // CHUNKS)
                    totals[name][0] += figures["wall_us"] / CHUNKS
                    totals[name][1] += figures["cpu_us"] / CHUNKS
                    failures += figures["failures"]
    finally:
        await meter.close()
        storage.close()
    return {
        "wall_us": totals["ours"][0],
        "cpu_us": totals["ours"][1],
        "minimal_wall_us": totals["minimal"][0],
        "minimal_cpu_us": totals["minimal"][1],
        "failures": failures,
    }


async def measure_one(scenario: str, count: int, connections: int, settings: Settings) -> Figures:
    with tempfile.TemporaryDirectory(prefix="edge-node-request-path-") as scratch:
        return await measure_pair(scenario, count, connections, Path(scratch), settings)


async def counted(
    scenario: str, app_name: str, count: int, connections: int, settings: Settings
) -> None:
    """Serve `scenario` with one app, valgrind's instruction counting on for `count` requests."""
    with tempfile.TemporaryDirectory(prefix="edge-node-request-path-") as scratch:
        if app_name == "minimal":
            from bench.minimal_app import create_app as minimal_app  # noqa: PLC0415

            app, requests, meter, storage = minimal_app(), minimal_requests(scenario), None, None
        else:
            app, storage, meter, prefix, api_key = await seeded_daemon(Path(scratch), settings)
            requests = daemon_requests(scenario, prefix, api_key)
        try:
            async with running(app) as server:
                await drive(server, requests, connections, count // 4)  # warm-up
                _callgrind("--instr=on")
                await drive(server, requests, connections, count)
                _callgrind("--instr=off")
        finally:
            if meter is not None:
                await meter.close()
            if storage is not None:
                storage.close()


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", switch, str(os.getpid())], check=True)


def child(
    scenario: str, count: int, connections: int, profile: str | None, settings: str = "{}"
) -> None:
    """Measure one scenario in this process (the tree on sys.path[0]) and print it as JSON."""
    import uvloop  # noqa: PLC0415

    if profile:
        import cProfile  # noqa: PLC0415

        profiler = cProfile.Profile()
        profiler.enable()
    figures = uvloop.run(measure_one(scenario, count, connections, json.loads(settings)))
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    print(json.dumps(figures))


def run_child(
    tree: Path, scenario: str, count: int, connections: int, settings: Settings
) -> Figures:
    command = [
        sys.executable,
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); from bench.request_path import child;"
        " child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), None, sys.argv[5])",
        str(tree),
        scenario,
        str(count),
        str(connections),
        json.dumps(settings),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    # This file measures the other tree too: it is put in place of that tree's bench/.
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} on {tree} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


@contextlib.contextmanager
def revision_tree(
    revision: str | None,
    copied: tuple[str, ...] = ("request_path.py", "in_memory.py", "minimal_app.py"),
) -> Iterator[Path | None]:
    """A temporary worktree of `revision` with the benchmark files `copied` from this tree's
    bench/ (by default this benchmark and its minimal app; None: nothing)."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edge-node-against-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
            check=True,
            capture_output=True,
        )
        try:
            # One benchmark, one baseline, one way of driving them.
            for name in copied:
                (tree / "bench" / name).write_bytes((Path(__file__).parent / name).read_bytes())
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


def measure(
    count: int,
    connections: int,
    rounds: int,
    against: str | None = None,
    settings: Settings | None = None,
) -> dict[str, dict[str, Figures]]:
    """Best round of each scenario, per tree: {"this": {...}, against: {...}}."""
    best: dict[str, dict[str, Figures]] = {}
    with revision_tree(against) as other:
        trees = {"this": ROOT, **({against: other} if against and other else {})}
        for _ in range(rounds):
            for label, tree in trees.items():
                for scenario in SCENARIOS:
                    figures = run_child(tree, scenario, count, connections, settings or {})
                    print(f"{label} {scenario}: {figures}", file=sys.stderr)
                    kept = best.setdefault(label, {}).get(scenario)
                    ratio = figures["minimal_cpu_us"] / figures["cpu_us"]
                    if kept is None or ratio > kept["minimal_cpu_us"] / kept["cpu_us"]:
                        best[label][scenario] = figures
    return best


def table(best: dict[str, dict[str, Figures]]) -> list[list[Any]]:
    rows = []
    for label, figures in best.items():
        for scenario in SCENARIOS:
            found = figures[scenario]
            rows.append(
                [
                    label,
                    scenario,
                    round(found["minimal_cpu_us"], 1),
                    round(found["cpu_us"], 1),
                    round(found["minimal_cpu_us"] / found["cpu_us"], 3),
                    round(found["wall_us"], 1),
                    found["failures"],
                ]
            )
    return rows


COLUMNS = [
    "code",
    "scenario",
    "minimal app, loop CPU µs/req",
    "edge-node, loop CPU µs/req",
    "ratio",
    "edge-node, wall µs/req",
    "failures",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", help="a git revision to measure in the same run")
    parser.add_argument("--profile", help="profile one scenario in-process to this file")
    parser.add_argument("--scenario", default="get-score", help="the scenario --profile runs")
    parser.add_argument(
        "--callgrind", choices=SCENARIOS, help="count one scenario's instructions under valgrind"
    )
    parser.add_argument("--app", choices=("daemon", "minimal"), default="daemon")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="change a setting of the daemon measured (docs/configuration.md), e.g. "
        "meter.enabled=false; repeatable",
    )
    args = parser.parse_args()
    settings = parse_settings(parser, args.set)
    if args.callgrind:
        import uvloop  # noqa: PLC0415

        uvloop.run(counted(args.callgrind, args.app, args.requests, args.connections, settings))
        return
    if args.profile:
        child(args.scenario, args.requests, args.connections, args.profile, json.dumps(settings))
        return
    best = measure(args.requests, args.connections, args.rounds, args.against, settings)
    print(f"{args.requests} requests over {args.connections} connections, best of {args.rounds}")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in table(best):
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main()
