"""`keys create --credits` and `keys list` from the command, and credits spent to zero by the
two workers of `serve --workers 2`."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.cli.test_cli import Cli
from tests.cli.test_supervisor import queue_depths
from tests.served import NotifyListener, ServedNode

CREDITS = 25


class TestCreditCommands:
    def test_keys_create_grants_credits_and_keys_list_shows_what_is_left(self, cli: Cli) -> None:
        tenant_id = cli.create_tenant()["tenant_id"]
        key = cli.json(
            "keys", "create", tenant_id, "--role", "reader", "--credits", "10",
            "--refill", "10", "--refill-every", "30d",
        )  # fmt: skip
        assert (key["credits"], key["refill"], key["refill_every_seconds"]) == (10, 10, 2592000)
        listed = {entry["key_id"]: entry for entry in cli.json("keys", "list", tenant_id)}
        assert listed[key["key_id"]]["credits_left"] == 10
        assert sum(entry["credits"] is None for entry in listed.values()) == 1  # the first key

    def test_bad_credit_options_are_refused_naming_the_flag(self, cli: Cli) -> None:
        tenant_id = cli.create_tenant()["tenant_id"]
        results = cli.run_all(
            [
                (("keys", "create", tenant_id, "--credits", "-1"), None),
                (("keys", "create", tenant_id, "--credits", "2.5"), None),
                (("keys", "create", tenant_id, "--credits", "5", "--refill", "x"), None),
                (("keys", "create", tenant_id, "--credits", "5", "--refill-every", "soon"), None),
            ]
        )
        for (status, _, stderr), flag in zip(
            results, ("--credits", "--credits", "--refill", "--refill-every"), strict=True
        ):
            assert status == 2, stderr
            assert f"argument {flag}: must be" in stderr
        unpaired = cli.run("keys", "create", tenant_id, "--credits", "5", "--refill", "5")
        assert unpaired.returncode != 0
        assert "--refill and --refill-every go together" in unpaired.stderr
        assert len(cli.json("keys", "list", tenant_id)) == 1


class TestCreditsAcrossWorkers:
    def test_two_workers_serve_exactly_the_keys_credits(
        self,
        cli: Cli,
        tmp_path: Path,
        notify: NotifyListener,
        served_nodes: list[ServedNode],
    ) -> None:
        """Requests spread over both workers by the kernel, many at once: exactly CREDITS are
        served, every other one is 429 credits-exhausted, and each served one was billed."""
        tenant_id = cli.create_tenant()["tenant_id"]
        key = cli.json("keys", "create", tenant_id, "--credits", str(CREDITS))
        node = ServedNode(cli.data_dir, "--workers", "2", notify=notify, log=tmp_path / "log")
        served_nodes.append(node)
        notify.wait_for("READY")
        path = f"/v1/tenants/{tenant_id}/items/book/score"

        def read(_: int) -> tuple[int, str | None]:
            status, body, _headers = node.request("GET", path, {"X-API-Key": key["api_key"]})
            return status, body.get("type") if status != 200 else None

        with ThreadPoolExecutor(8) as pool:
            outcomes = Counter(pool.map(read, range(3 * CREDITS)))
        assert outcomes == {
            (200, None): CREDITS,
            (429, "urn:edge-node:problem:credits-exhausted"): 2 * CREDITS,
        }
        assert node.stop() == 0
        depths = queue_depths(cli.data_dir)
        assert depths["worker-0"] + depths["worker-1"] == CREDITS
        assert min(depths["worker-0"], depths["worker-1"]) > 0, depths  # both workers spent
        listed = cli.json("keys", "list", tenant_id)
        assert [entry.get("credits_left") for entry in listed if entry["credits"]] == [0]
        assert "Traceback" not in node.log.read_text()
