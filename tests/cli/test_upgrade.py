"""Upgrading `serve --workers 2` under load: a new build takes over with no request failed and
no connection refused, and a build that never becomes ready is rolled back by itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import edge_node
import sync
from edge_node.cli.upgrade_record import UpgradeFile
from edge_node.queue import inspect_queue
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.cli.test_lifecycle import create_tenant
from tests.metrics.conftest import parse_samples
from tests.served import ServedNode

NEW_VERSION = "9.9.9+upgrade-test"
APP = "edge_node/http/app.py"
NEVER_READY = """

async def readyz(request: web.Request) -> web.StreamResponse:  # this build is never ready
    raise ServiceUnavailable("this build never becomes ready", slug="not-ready")
"""
READY_ONCE = """

_asked = 0


async def readyz(request: web.Request) -> web.StreamResponse:  # ready once, then no more
    global _asked
    _asked += 1
    if _asked > 1:
        raise ServiceUnavailable("this build stops being ready", slug="not-ready")
    return json_response({"status": "ready"})
"""
WORKER_MAIN = "edge_node/cli/__main__.py"  # what a worker runs: python -m edge_node.cli
EXITS = "raise SystemExit(1)  # this build's workers exit at once\n"
# Flat out, so that connections wait in accept queues when the old workers stop: with a
# listening socket of each worker's own (SO_REUSEPORT) this load sees connections reset.
LOAD_CLIENTS = 16
LOAD_LIMIT_SECONDS = 120  # the load stops by itself, whatever happens to the test


class Installation:
    """A directory the workers import edge-node from (their working directory, first on
    their path), whose packages are swapped as an installer would: a new release is laid
    beside the old one and a symlink is renamed over, atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        self.site.mkdir(parents=True)
        self.install(Path(edge_node.__file__).parent.parent, "current")

    def build(
        self, name: str, *, version: str, append: tuple[str, str] = ("", ""), prepend: str = ""
    ) -> Path:
        """A copy of the packages with another version string; `append` adds its text to
        the end of a module (path, text), `prepend` puts its text before a worker's main."""
        release = self.root / name
        for package in (edge_node, sync):
            source = Path(package.__file__).parent
            shutil.copytree(
                source, release / source.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        init = release / "edge_node" / "__init__.py"
        init.write_text(init.read_text().replace(edge_node.__version__, version))
        module, text = append
        if module:
            (release / module).write_text((release / module).read_text() + text)
        if prepend:
            main = release / WORKER_MAIN
            main.write_text(prepend + main.read_text())
        return release

    def install(self, release: Path, name: str) -> None:
        for package in ("edge_node", "sync"):
            link = self.site / f".{package}.{name}"
            link.symlink_to(release / package)
            link.rename(self.site / package)


@dataclass
class Load:
    """Clients each sending one billable request after another, each on a new connection,
    counting answers by status and failures by kind, until stopped (or LOAD_LIMIT_SECONDS)."""

    url: str
    headers: dict[str, str]
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.threads = [threading.Thread(target=self._client) for _ in range(LOAD_CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            request = urllib.request.Request(self.url, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    self.statuses[response.status] += 1
            except urllib.error.HTTPError as error:
                self.statuses[error.code] += 1
            except urllib.error.URLError as error:
                self.failures[type(error.reason).__name__] += 1
            except OSError as error:
                self.failures[type(error).__name__] += 1

    def answered(self) -> int:
        return sum(self.statuses.values())


def metered(data_dir: Path) -> dict[str, int]:
    """Usage events in each worker queue directory."""
    return {
        path.name: inspect_queue(path).last_seq
        for path in sorted((data_dir / "queue").glob("worker-*"))
    }


def upgrade(data_dir: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [*edge_node_command(), "--data-dir", str(data_dir), "upgrade"],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=300,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def upgrades_counted(node: ServedNode) -> dict[str, float]:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        samples = parse_samples(response.read().decode())
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "edge_node_upgrades_total"
    }


# Generous: a build that can become ready must never be rolled back for being slow on a busy
# machine. Only the test of a build that never becomes ready waits for less.
UPGRADE_TIMEOUT_SECONDS = "120"
NEVER_READY_TIMEOUT_SECONDS = "5"


@pytest.fixture
def upgradable(
    request: pytest.FixtureRequest, tmp_path: Path, served_nodes: list[ServedNode]
) -> tuple[Installation, ServedNode]:
    """`serve --workers 2` whose workers import edge-node from an Installation; a test's
    indirect parameter, if any, sets workers.upgrade_timeout_seconds."""
    installation = Installation(tmp_path / "installation")
    data_dir = tmp_path / "data"
    env = clean_environment(
        EDGE_NODE_WORKERS_UPGRADE_TIMEOUT_SECONDS=getattr(
            request, "param", UPGRADE_TIMEOUT_SECONDS
        ),
        EDGE_NODE_WORKERS_UPGRADE_PROBATION_SECONDS="1",
        EDGE_NODE_RATE_LIMIT_PER_MINUTE="100000000",  # the load is not to be limited
    )
    node = ServedNode(
        data_dir, "--workers", "2", env=env, log=tmp_path / "log", cwd=installation.site
    )
    served_nodes.append(node)
    return installation, node


def start_load(node: ServedNode, data_dir: Path) -> Load:
    """A tenant, and a steady load of its billable score reads on the node."""
    tenant = create_tenant(data_dir)
    path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"
    return Load(node.url + path, {"X-API-Key": tenant["api_key"]}).start()


def data_dir_of(node: ServedNode) -> Path:
    return Path(node.process.args[2])  # type: ignore[index]


class TestUpgrade:
    def test_a_new_build_takes_over_under_load_with_nothing_dropped(
        self, upgradable: tuple[Installation, ServedNode]
    ) -> None:
        """Under a steady load of billable requests, each on a new connection, `edge-node
        upgrade` to a new build replaces both workers by workers of the new version: no
        request fails, no connection is refused, and every request answered 200 is metered
        exactly once (old and new queue directories together)."""
        installation, node = upgradable
        data_dir = data_dir_of(node)
        old_workers = set(node.children())
        load = start_load(node, data_dir)
        try:
            time.sleep(1)
            installation.install(installation.build("v2", version=NEW_VERSION), "v2")
            code, record = upgrade(data_dir)
            time.sleep(1)
        finally:
            load.finish()
        assert (code, record["state"]) == (0, "completed"), record
        assert record["to_version"] == NEW_VERSION
        assert record["finished_at"] >= record["started_at"]
        assert load.failures == Counter(), load.failures
        assert set(load.statuses) == {200}, load.statuses
        new_workers = set(node.children())
        assert len(new_workers) == 2
        assert not new_workers & old_workers
        for pid in new_workers:
            assert "--worker-index" in Path(f"/proc/{pid}/cmdline").read_text()
        depths = metered(data_dir)
        assert sum(depths.values()) == load.answered(), depths
        assert all(depths.values()), depths  # both generations served
        assert upgrades_counted(node) == {"completed": 1, "rolled_back": 0}
        assert node.stop() == 0
        assert "Traceback" not in node.log.read_text()

    @pytest.mark.parametrize("upgradable", [NEVER_READY_TIMEOUT_SECONDS], indirect=True)
    def test_a_build_never_ready_is_rolled_back_and_the_old_workers_serve_on(
        self, upgradable: tuple[Installation, ServedNode]
    ) -> None:
        """A build whose /readyz never answers 200 takes no connection: after
        workers.upgrade_timeout_seconds the upgrade is rolled back, the old workers served
        every request meanwhile, `status` and /metrics report the rollback."""
        installation, node = upgradable
        data_dir = data_dir_of(node)
        old_workers = set(node.children())
        load = start_load(node, data_dir)
        try:
            broken = installation.build("broken", version="9.9.9+broken", append=(APP, NEVER_READY))
            installation.install(broken, "broken")
            code, record = upgrade(data_dir)
            served_during = load.answered()
        finally:
            load.finish()
        assert (code, record["state"]) == (1, "rolled_back"), record
        assert "not ready within 5 s" in str(record["reason"])
        assert load.failures == Counter(), load.failures
        assert set(load.statuses) == {200}, load.statuses
        assert served_during > 0
        assert set(node.children()) == old_workers
        assert sum(metered(data_dir).values()) == load.answered()
        status = subprocess.run(
            [*edge_node_command(), "--data-dir", str(data_dir), "status", "--json"],
            capture_output=True,
            text=True,
            env=clean_environment(),
            check=True,
        )
        assert json.loads(status.stdout)["upgrade"]["state"] == "rolled_back"
        assert upgrades_counted(node) == {"completed": 0, "rolled_back": 1}
        assert "upgrade rolled back" in node.log.read_text()
        assert node.stop() == 0


class TestRollback:
    @pytest.mark.parametrize(
        ("append", "prepend", "reason"),
        [
            ((APP, READY_ONCE), "", "failed readiness on probation: /readyz answered 503"),
            (("", ""), EXITS, "exited with status 1"),
        ],
        ids=["ready-then-not", "exits-at-start"],
    )
    def test_a_build_failing_after_it_started_is_rolled_back_with_nothing_dropped(
        self,
        upgradable: tuple[Installation, ServedNode],
        append: tuple[str, str],
        prepend: str,
        reason: str,
    ) -> None:
        """New workers that answer /readyz once and then 503 (after taking connections,
        on probation), or that exit at once, are stopped and the old workers serve on:
        no request fails, and every request answered is metered once. A good build
        installed afterwards upgrades as usual, into the bank the failed workers left."""
        installation, node = upgradable
        data_dir = data_dir_of(node)
        old_workers = set(node.children())
        load = start_load(node, data_dir)
        try:
            bad = installation.build("bad", version="9.9.9+bad", append=append, prepend=prepend)
            installation.install(bad, "bad")
            code, record = upgrade(data_dir)
            time.sleep(0.5)
        finally:
            load.finish()
        assert (code, record["state"]) == (1, "rolled_back"), record
        assert reason in str(record["reason"])
        assert load.failures == Counter(), load.failures
        assert set(load.statuses) == {200}, load.statuses
        assert set(node.children()) == old_workers
        assert sum(metered(data_dir).values()) == load.answered()

        installation.install(installation.build("v2", version=NEW_VERSION), "v2")
        code, record = upgrade(data_dir)
        assert (code, record["state"], record["to_version"]) == (0, "completed", NEW_VERSION)
        assert upgrades_counted(node) == {"completed": 1, "rolled_back": 1}
        assert node.stop() == 0


class TestUpgradeOfOneProcess:
    def test_a_node_serving_as_one_process_refuses_and_keeps_serving(
        self, tmp_path: Path, served_nodes: list[ServedNode]
    ) -> None:
        """Without a supervisor there is nothing to hand over to: `edge-node upgrade` says
        so (exit 1, a `refused` record) and the node, which SIGUSR2 would otherwise end,
        keeps serving."""
        node = ServedNode(tmp_path / "data", log=tmp_path / "log")
        served_nodes.append(node)
        code, record = upgrade(tmp_path / "data")
        assert (code, record["state"]) == (1, "refused")
        assert "serve --workers N" in str(record["reason"])
        assert node.request("GET", "/healthz")[0] == 200
        assert node.stop() == 0
        assert os.path.exists(tmp_path / "data" / "upgrade.json")

    def test_an_upgrade_under_way_is_not_asked_for_again(
        self, tmp_path: Path, served_nodes: list[ServedNode]
    ) -> None:
        """While the serving process's upgrade record says `upgrading`, `edge-node upgrade`
        says so and sends nothing (the record stays as it was)."""
        node = ServedNode(tmp_path / "data", log=tmp_path / "log")
        served_nodes.append(node)
        upgrades = UpgradeFile(tmp_path / "data")
        upgrades.start(0, 1)
        before = upgrades.path.read_bytes()
        done = subprocess.run(
            [*edge_node_command(), "--data-dir", str(tmp_path / "data"), "upgrade"],
            capture_output=True,
            text=True,
            env=clean_environment(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert "an upgrade is already under way" in done.stderr
        assert upgrades.path.read_bytes() == before
        assert node.stop() == 0
