"""`tenants create --quota` and `tenants update`: a tenant's own allowance, from the command."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from pathlib import Path

from edge_node.usage.quotas import OTHERS_REFRESH_SECONDS
from tests.cli.test_cli import Cli
from tests.cli.test_supervisor import queue_depths
from tests.served import NotifyListener, ServedNode


class TestQuotaCommands:
    def test_create_and_update_set_the_quota_and_plan_quota_drops_it(self, cli: Cli) -> None:
        """The quota and policy given are stored and printed; --plan-quota clears both."""
        created = cli.create_tenant("--quota", "1000", "--quota-policy", "block")
        assert (created["quota"], created["quota_policy"]) == (1000, "block")
        tenant_id = created["tenant_id"]
        updated = cli.json("tenants", "update", tenant_id, "--quota", "0")
        assert (updated["quota"], updated["quota_policy"]) == (0, "block")
        cleared = cli.json("tenants", "update", tenant_id, "--plan-quota")
        assert (cleared["quota"], cleared["quota_policy"]) == (None, None)
        assert cli.json("tenants", "list")[0]["quota"] is None

    def test_update_sets_the_quota_and_the_email_together(self, cli: Cli) -> None:
        """`tenants update` takes --email beside the quota options and prints both."""
        tenant_id = cli.create_tenant()["tenant_id"]
        updated = cli.json(
            "tenants", "update", tenant_id, "--quota", "7", "--email", "ops@acme.example"
        )
        assert (updated["quota"], updated["email"]) == (7, "ops@acme.example")

    def test_a_negative_or_fractional_quota_is_refused_naming_the_flag(self, cli: Cli) -> None:
        """Exit 2, nothing printed, the message names --quota; nothing is stored."""
        tenant_id = cli.create_tenant()["tenant_id"]
        results = cli.run_all(
            [
                (("tenants", "create", "--name", "x", "--quota", "-3"), None),
                (("tenants", "create", "--name", "x", "--quota", "1.5"), None),
                (("tenants", "update", tenant_id, "--quota", "ten"), None),
                (("tenants", "update", tenant_id, "--quota=-1"), None),
            ]
        )
        for status, stdout, stderr in results:
            assert (status, stdout) == (2, ""), stderr
            assert "argument --quota: must be a whole number 0 or more" in stderr
        assert [tenant["quota"] for tenant in cli.json("tenants", "list")] == [None]

    def test_update_without_a_change_or_of_an_unknown_tenant_is_refused(self, cli: Cli) -> None:
        tenant_id = cli.create_tenant()["tenant_id"]
        nothing = cli.run("tenants", "update", tenant_id)
        unknown = cli.run(
            "tenants", "update", "0" * 8 + "-0000-4000-8000-" + "0" * 12, "--quota", "5"
        )
        assert nothing.returncode != 0
        assert "nothing to change" in nothing.stderr
        assert unknown.returncode != 0
        assert "no tenant with id" in unknown.stderr


class TestQuotaAcrossWorkers:
    def test_two_workers_count_each_others_spend(
        self,
        cli: Cli,
        tmp_path: Path,
        notify: NotifyListener,
        served_nodes: list[ServedNode],
    ) -> None:
        """Requests alternating between the two workers, each after the other worker's counts
        are read again: a block allowance of 10 serves 10 for the node, not 10 per worker."""
        tenant = cli.create_tenant("--quota", "10", "--quota-policy", "block")
        probe = cli.create_tenant()  # no allowance: finds which worker holds a connection
        node = ServedNode(cli.data_dir, "--workers", "2", notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        notify.wait_for("READY")
        connections = _one_per_worker(node, cli.data_dir, probe)
        try:
            path = f"/v1/tenants/{tenant['tenant_id']}/items/book/score"
            statuses = []
            for turn in range(24):
                connection = connections[turn % 2]
                connection.request("GET", path, headers={"X-API-Key": tenant["api_key"]})
                with connection.getresponse() as answer:
                    answer.read()
                    statuses.append(answer.status)
                time.sleep(OTHERS_REFRESH_SECONDS + 0.02)
        finally:
            for connection in connections:
                connection.close()
        assert statuses == [200] * 10 + [429] * 14
        assert node.stop() == 0


def _one_per_worker(
    node: ServedNode, data_dir: Path, probe: dict[str, str]
) -> list[http.client.HTTPConnection]:
    """Two keep-alive connections to the node, held by different workers. Which worker
    accepts a connection is the kernel's choice: each connection's first request, a billable
    read of a tenant without an allowance, shows it by the queue it lands in."""
    address = urllib.parse.urlsplit(node.url)
    path = f"/v1/tenants/{probe['tenant_id']}/items/probe/score"
    held: dict[str, http.client.HTTPConnection] = {}
    opened = []
    for _ in range(40):
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        opened.append(connection)
        before = queue_depths(data_dir)
        connection.request("GET", path, headers={"X-API-Key": probe["api_key"]})
        with connection.getresponse() as answer:
            answer.read()
        after = queue_depths(data_dir)
        worker = next(name for name in after if after[name] != before.get(name, 0))
        held.setdefault(worker, connection)
        if len(held) == 2:
            break
    for connection in opened:
        if connection not in held.values():
            connection.close()
    assert len(held) == 2, f"40 connections, all accepted by {list(held)}"
    return list(held.values())
