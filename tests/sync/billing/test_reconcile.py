"""`edge-node billing reconcile`: served against billed per tenant and day, beside the daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_node.errors import TransientSyncError
from edge_node.queue import open_queue
from edge_node.usage.meter import BILLING_CONSUMER
from sync.billing.reconcile import reconcile
from sync.stripe.standin import StripeStandin
from tests.cli.test_cli import clean_environment, edge_node_command
from tests.sync.billing.support import BillingNode
from tests.sync.billing.test_flush import DAY, window_start


def run_reconcile(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """The command as an operator runs it, in its own process, while the test holds the queue."""
    done = subprocess.run(
        [
            *edge_node_command(),
            "--data-dir",
            str(data_dir),
            "billing",
            "reconcile",
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


def day_of(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).date().isoformat()


def rows(document: dict[str, Any], tenant: str) -> list[dict[str, Any]]:
    return [day for day in document["days"] if day["tenant_id"] == tenant]


def total(days: list[dict[str, Any]], key: str) -> dict[str, int]:
    """A tally (`served`, `queued`, a state) summed over days."""
    summed: dict[str, int] = {}
    for day in days:
        for name, value in day[key].items():
            summed[name] = summed.get(name, 0) + value
    return summed


class TestReconcile:
    async def test_billed_usage_reconciles_and_the_command_exits_zero(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """After a flush, each tenant's day shows served = confirmed = billed, usage of the
        window still running as queued, and the command (run while the queue is locked by
        this process, as by a serving daemon) exits 0."""
        tenant = await node.tenant("t")
        at = window_start(node, 900)
        await node.serve(tenant, 7, at=at, units=2)
        await node.consumer().run_round()
        await node.serve(tenant, 3, at=node.clock())  # the running window: not planned yet
        code, document = run_reconcile(node.data_dir)
        assert code == 0
        assert document["ok"] is True
        days = rows(document, tenant)  # one day, or two just after midnight UTC
        assert total(days, "served") == {"events": 10, "units": 17}
        assert all(day["served_counted"] for day in days)
        assert total(days, "confirmed") == {"batches": 1, "events": 7, "units": 14}
        assert total(days, "queued") == {"events": 3, "units": 3}
        assert sum(day["billed_units"] for day in days) == 14
        assert sum(day["in_flight_units"] for day in days) == 3
        assert standin.billed(node.customer(tenant)) == 14
        [period] = [p for p in document["periods"] if p["tenant_id"] == tenant]
        assert (period["served"], period["confirmed"], period["queued"]) == (17, 14, 3)
        assert (period["difference"], period["unexplained"]) == (0, 0)
        assert period["invoiced"] is None  # Stripe is not configured for the command
        assert document["stripe_read"] is False

    async def test_flat_plan_usage_goes_to_the_unpriced_meter_and_is_not_counted_billed(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A flat-plan tenant's usage is sent to the meter no price bills (Stripe holds it,
        no invoice charges it) and reconcile reports it as included in the flat fee:
        billed 0, the statement balanced; a payg tenant beside it is billed as before."""
        flat = await node.tenant("flat", plan="flat")
        payg = await node.tenant("payg")
        at = window_start(node, 900)
        await node.serve(flat, 6, at=at)
        await node.serve(payg, 4, at=at)
        await node.consumer().run_round()
        assert node.ledger(
            "SELECT event_name, state FROM billing_ledger WHERE tenant_id = ?", flat
        ) == [("edge_node_requests_included", "confirmed")]
        assert node.catalog is not None
        included = standin.account.meters[node.catalog.included_meter_id]
        assert included["event_name"] == "edge_node_requests_included"
        assert not [
            p
            for p in standin.account.prices.values()
            if (p["recurring"] or {}).get("meter") == included["id"]
        ]
        assert (standin.metered(node.customer(flat)), standin.billed(node.customer(flat))) == (6, 0)
        assert standin.billed(node.customer(payg)) == 4
        code, document = run_reconcile(node.data_dir)
        assert code == 0
        flat_days, payg_days = rows(document, flat), rows(document, payg)
        assert sum(day["billed_units"] for day in flat_days) == 0
        assert sum(day["statement"]["included_in_flat_fee"] for day in flat_days) == 6
        assert all(day["statement"]["difference"] == 0 for day in flat_days + payg_days)
        assert sum(day["billed_units"] for day in payg_days) == 4
        assert sum(day["statement"]["included_in_flat_fee"] for day in payg_days) == 0
        (flat_period,) = [p for p in document["periods"] if p["tenant_id"] == flat]
        assert flat_period["confirmed"] == flat_period["included_in_flat_fee"] == 6
        assert (flat_period["carried_forward"], flat_period["unexplained"]) == (0, 0)

    async def test_usage_waiting_for_stripe_or_a_customer_is_in_flight_not_wrong(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Batches sent without an answer yet, or planned for a tenant with no customer yet,
        count as in flight: the report is in order."""
        down = await node.tenant("down")
        pending = await node.tenant("pending", provisioned=False)
        at = window_start(node, 900)
        await node.serve(down, 4, at=at)
        await node.serve(pending, 5, at=at)
        standin.set_switches(fail=True, only="POST /v1/billing/meter_events")
        with pytest.raises(TransientSyncError):
            await node.consumer().run()
        report = reconcile(node.data_dir)
        assert report.ok
        by_tenant = {day.tenant_id: day for day in report.days.values()}
        assert by_tenant[down].states["sent"].units == 4
        assert by_tenant[pending].states["planned"].units == 5
        assert by_tenant[down].in_flight_units == 4

    async def test_set_aside_usage_makes_the_command_fail_and_says_why(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Usage set aside (here: older than Stripe's 35 days) is served but neither billed nor
        in flight: the day shows it as unbilled, the batch is listed with its reason, and the
        command exits 1; --tenant and --since narrow the report to what is asked."""
        old, fine = await node.tenant("old"), await node.tenant("fine")
        long_ago = node.clock() - 40 * DAY
        await node.serve(old, 6, at=long_ago)
        await node.serve(fine, 2, at=window_start(node, 900))
        await node.consumer().run_until_settled()
        code, document = run_reconcile(node.data_dir)
        assert code == 1
        assert document["ok"] is False
        [old_day] = rows(document, old)
        assert old_day["day"] == day_of(long_ago)
        assert (old_day["unbilled_units"], old_day["set_aside"]["units"]) == (6, 6)
        [aside] = document["set_aside"]
        assert aside["tenant_id"] == old
        assert "35-day" in aside["reason"]
        code, only_fine = run_reconcile(node.data_dir, "--tenant", fine)
        assert (code, [day["tenant_id"] for day in only_fine["days"]]) == (0, [fine])
        code, recent = run_reconcile(node.data_dir, "--since", day_of(node.clock() - DAY))
        assert code == 0
        assert old not in {day["tenant_id"] for day in recent["days"]}

    async def test_usage_served_but_lost_before_billing_makes_the_command_fail(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """Served is counted apart from billing's records: usage served and then lost with the
        queue (its directory gone before the flush planned it) shows as served but not
        recorded, and the command exits 1, where a served figure derived from the queue and
        the ledger would agree with billing and exit 0."""
        lost, kept = await node.tenant("lost"), await node.tenant("kept")
        at = window_start(node, 900)
        await node.serve(kept, 4, at=at)
        await node.consumer().run_until_settled()
        await node.serve(lost, 6, at=at)
        directory = node.queue.directory
        await node.queue.close()
        shutil.rmtree(directory)
        node.queue = await open_queue(directory, consumers=(BILLING_CONSUMER,))
        code, document = run_reconcile(node.data_dir)
        assert code == 1
        [lost_day] = rows(document, lost)
        assert lost_day["served"] == {"events": 6, "units": 6}
        assert lost_day["recorded"] == {"events": 0, "units": 0}
        assert (lost_day["unrecorded_units"], lost_day["ok"]) == (6, False)
        [lost_period] = [p for p in document["periods"] if p["tenant_id"] == lost]
        assert (lost_period["served"], lost_period["difference"]) == (6, 6)
        assert lost_period["unexplained"] == 6
        [kept_day] = rows(document, kept)
        assert (kept_day["served"], kept_day["billed_units"], kept_day["ok"]) == (
            {"events": 4, "units": 4},
            4,
            True,
        )

    async def test_a_queued_record_billing_would_not_bill_is_unreadable(
        self, node: BillingNode, standin: StripeStandin
    ) -> None:
        """A queued record the planner would bill as nothing (not JSON, or its units not an
        integer) is counted as unreadable, not as queued usage, and the report is not ok."""
        tenant = await node.tenant("t")
        at_ms = int(window_start(node, 900) * 1000)
        await node.serve(tenant, 2, at=at_ms / 1000)
        units_as_text = {"tenant_id": tenant, "units": "5", "timestamp_ms": at_ms}
        for payload in (b"not json", json.dumps(units_as_text).encode()):
            await node.queue.append_nowait(payload, timestamp_ms=at_ms)
        report = reconcile(node.data_dir)
        assert report.unreadable_records == 2
        [day] = report.days.values()
        assert (day.queued.events, day.queued.units) == (2, 2)
        assert report.ok is False

    def test_a_bad_date_is_a_usage_error(self, tmp_path: Path) -> None:
        """--since takes YYYY-MM-DD; anything else is refused with exit 2."""
        code, _ = run_reconcile(tmp_path, "--since", "last week")
        assert code == 2
