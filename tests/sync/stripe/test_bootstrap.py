"""`edge-node stripe bootstrap`: the meter, product and plan prices, created once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import stripe

from edge_node.cli import main as cli
from edge_node.errors import TransientSyncError
from sync.stripe.catalog import FILE_NAME, load_catalog
from sync.stripe.gateway import StripeGateway
from sync.stripe.standin import DEFAULT_API_KEY, StripeStandin
from tests.sync.stripe.conftest import METER_EVENT
from tests.sync.stripe.standin_support import (
    JAN_1_2026,
    advance,
    clock_customer,
    make_catalog,
    subscribe,
)


def write_config(tmp_path: Path, standin: StripeStandin, **stripe: Any) -> Path:
    """A TOML file pointing `[stripe]` at the stand-in, the key in its own file."""
    key_file = tmp_path / "stripe.key"
    key_file.write_text(DEFAULT_API_KEY + "\n")
    settings = {"api_key_file": str(key_file), "api_base": standin.url, **stripe}
    lines = [f'data_dir = "{tmp_path / "data"}"', 'node_id = "test-node"', "[stripe]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = tmp_path / "edge-node.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in a thread (it runs its own event loop) while the stand-in serves on ours."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


def posts(standin: StripeStandin) -> int:
    return sum(n for endpoint, n in standin.calls.items() if endpoint.startswith("POST"))


class TestGatewayBootstrap:
    async def test_it_creates_the_meter_product_and_three_prices(
        self, standin: StripeStandin, gateway: StripeGateway
    ) -> None:
        """One sum meter on the event name; payg per unit and tiered graduated, both metered
        on that meter; flat a licensed monthly fee; and the meter of flat-plan usage
        (`<event name>_included`), which no price bills."""
        catalog = await gateway.bootstrap(meter_event_name=METER_EVENT)
        meter, included = (
            standin.account.meters[m] for m in (catalog.meter_id, catalog.included_meter_id)
        )
        assert (len(standin.account.meters), meter["event_name"]) == (2, METER_EVENT)
        assert included["event_name"] == f"{METER_EVENT}_included"
        assert meter["default_aggregation"] == included["default_aggregation"] == {"formula": "sum"}
        prices = {plan: standin.account.prices[pid] for plan, pid in catalog.price_ids.items()}
        assert prices["payg"]["recurring"]["meter"] == catalog.meter_id
        assert prices["payg"]["billing_scheme"] == "per_unit"
        assert prices["tiered"]["recurring"]["usage_type"] == "metered"
        assert prices["tiered"]["tiers_mode"] == "graduated"
        assert prices["flat"]["recurring"] == {
            "interval": "month",
            "interval_count": 1,
            "usage_type": "licensed",
            "meter": None,
            "trial_period_days": None,
        }
        assert {p["product"] for p in prices.values()} == {catalog.product_id}

    async def test_running_it_again_creates_nothing(
        self, standin: StripeStandin, gateway: StripeGateway
    ) -> None:
        """A second bootstrap finds everything (meter by event name, product by id, prices by
        lookup key), returns the same ids and makes no create call."""
        first = await gateway.bootstrap(meter_event_name=METER_EVENT)
        created = posts(standin)
        again = await gateway.bootstrap(meter_event_name=METER_EVENT)
        assert again == first
        assert posts(standin) == created
        assert (len(standin.account.meters), len(standin.account.prices)) == (2, 3)

    async def test_a_price_holding_the_key_is_checked_not_trusted(
        self, standin: StripeStandin, gateway: StripeGateway, client: stripe.StripeClient
    ) -> None:
        """The payg key moved (`transfer_lookup_key`) to a price of another product: the
        price listed under the key is not payg's on this meter, so bootstrap makes a new
        one, which takes the key back; the other plans' prices are kept."""
        first = await gateway.bootstrap(meter_event_name=METER_EVENT)
        key = f"edge_node_payg_{METER_EVENT}"
        other = await client.v1.products.create_async({"name": "something else"})
        moved = await client.v1.prices.create_async(
            {
                "currency": "usd",
                "product": other.id,
                "unit_amount": 100,
                "lookup_key": key,
                "transfer_lookup_key": True,
            }
        )
        again = await gateway.bootstrap(meter_event_name=METER_EVENT)
        assert again.price_ids["payg"] not in (first.price_ids["payg"], moved.id)
        payg = standin.account.prices[again.price_ids["payg"]]
        assert (payg["product"], payg["recurring"]["meter"]) == (again.product_id, first.meter_id)
        assert payg["lookup_key"] == key
        assert standin.account.prices[moved.id]["lookup_key"] is None
        assert {p: again.price_ids[p] for p in ("tiered", "flat")} == {
            p: first.price_ids[p] for p in ("tiered", "flat")
        }
        assert await gateway.bootstrap(meter_event_name=METER_EVENT) == again

    async def test_a_bootstrap_cut_short_is_finished_by_the_next(
        self, standin: StripeStandin, gateway: StripeGateway
    ) -> None:
        """Stripe failing half-way (the meter and product made, prices refused) leaves some
        objects; the next run completes the rest without duplicating any."""
        standin.set_switches(fail=True, only="/v1/prices")
        with pytest.raises(TransientSyncError):
            await gateway.bootstrap(meter_event_name=METER_EVENT)
        assert (len(standin.account.meters), len(standin.account.products)) == (2, 1)
        standin.set_switches(fail=False)
        catalog = await gateway.bootstrap(meter_event_name=METER_EVENT)
        assert set(standin.account.prices) == set(catalog.price_ids.values())
        assert (len(standin.account.meters), len(standin.account.prices)) == (2, 3)


class TestCommand:
    async def test_it_writes_and_prints_the_catalog_once(
        self, tmp_path: Path, standin: StripeStandin
    ) -> None:
        """The command writes the ids to stripe-catalog.json in data_dir and prints them; run
        twice it prints the same ids and creates nothing new."""
        config = write_config(tmp_path, standin)
        code, out, _ = await run_cli("--config", str(config), "stripe", "bootstrap")
        assert code == 0
        printed = json.loads(out)
        path = tmp_path / "data" / FILE_NAME
        assert printed["catalog_file"] == str(path)
        saved = load_catalog(path)
        assert saved is not None
        assert printed["price_ids"] == dict(saved.price_ids)
        created = posts(standin)
        code, again, _ = await run_cli("--config", str(config), "stripe", "bootstrap")
        assert (code, json.loads(again)) == (0, printed)
        assert posts(standin) == created

    async def test_it_reads_the_invoice_grace_back_from_a_renewal_draft(
        self, tmp_path: Path, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """Stripe has no API for the finalization grace, so the account's value (2 h, set
        as an operator would in the Dashboard) is read from a period-end draft
        (`automatically_finalizes_at - created`): unverified while no draft shows it
        (exit 0, said on stderr); `differs` from the configured 1 h exits 1 with the
        operator's step; configured as 2 h it is `confirmed`."""
        config = write_config(tmp_path, standin)
        code, out, err = await run_cli("--config", str(config), "stripe", "bootstrap")
        assert (code, json.loads(out)["invoice_grace"]["state"]) == (0, "unverified")
        assert "not verified" in err
        standin.account.settings.set_grace(7200)
        prices = await make_catalog(client)
        clock, customer = await clock_customer(client, email="a@example.com")
        await subscribe(
            client, customer, prices.flat, collection_method="send_invoice", days_until_due=30
        )
        await advance(client, clock, JAN_1_2026 + 31 * 86_400 + 60)
        code, out, err = await run_cli("--config", str(config), "stripe", "bootstrap")
        grace = json.loads(out)["invoice_grace"]
        assert code == 1
        assert (grace["state"], grace["configured_seconds"], grace["observed_seconds"]) == (
            "differs",
            3600,
            7200,
        )
        assert "Invoice finalization grace period" in err
        assert "no API" in err
        config = write_config(tmp_path, standin, invoice_grace_hours=2)
        code, out, _ = await run_cli("--config", str(config), "stripe", "bootstrap")
        assert (code, json.loads(out)["invoice_grace"]["state"]) == (0, "confirmed")

    async def test_without_a_key_file_it_is_a_configuration_error(self, tmp_path: Path) -> None:
        """Stripe not configured: exit 78 with a message naming stripe.api_key_file."""
        code, _, err = await run_cli("--data-dir", str(tmp_path), "stripe", "bootstrap")
        assert code == cli.EXIT_CONFIG
        assert "stripe.api_key_file" in err

    async def test_stripe_unreachable_exits_69(
        self, tmp_path: Path, standin: StripeStandin
    ) -> None:
        """Stripe failing: exit 69 (try again later) and no catalog file."""
        standin.set_switches(fail=True)
        config = write_config(tmp_path, standin)
        code, _, err = await run_cli("--config", str(config), "stripe", "bootstrap")
        assert code == cli.EXIT_UNAVAILABLE
        assert "Stripe" in err
        assert not (tmp_path / "data" / FILE_NAME).exists()
