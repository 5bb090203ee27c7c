"""`tenants create --quota` and `tenants update`: a tenant's own allowance, from the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    return Cli(tmp_path / "data", workdir)


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
