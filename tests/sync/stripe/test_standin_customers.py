"""The stand-in finds customers and prices as Stripe does, search included (and its absence),
through the official SDK."""

from __future__ import annotations

import pytest
import stripe

from sync.stripe.standin import StripeStandin
from tests.sync.stripe.standin_support import Catalog


class TestCustomerLookups:
    async def test_the_list_filters_by_exact_email_and_pages(
        self, client: stripe.StripeClient
    ) -> None:
        """`email` is an exact, case-sensitive filter; pages follow `starting_after`, newest
        first."""
        for n in range(3):
            await client.v1.customers.create_async({"name": f"c{n}", "email": "ops@example.com"})
        await client.v1.customers.create_async({"name": "other", "email": "Ops@example.com"})
        first = await client.v1.customers.list_async({"email": "ops@example.com", "limit": 2})
        assert [c.name for c in first.data] == ["c2", "c1"]
        assert first.has_more
        rest = await client.v1.customers.list_async(
            {"email": "ops@example.com", "limit": 2, "starting_after": first.data[-1].id}
        )
        assert [c.name for c in rest.data] == ["c0"]
        assert not rest.has_more

    async def test_search_can_be_unavailable(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """With search_disabled the search endpoint is a 404, as where Stripe offers none."""
        standin.set_switches(search_disabled=True)
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.customers.search_async({"query": "metadata['tenant_id']:'t'"})
        assert raised.value.http_status == 404

    async def test_search_lags_behind_creates(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """With search_lag a new customer is found by the list at once, by search only once
        the lag has passed."""
        standin.set_switches(search_lag=60)
        made = await client.v1.customers.create_async({"name": "n", "metadata": {"tenant_id": "t"}})
        query = {"query": "metadata['tenant_id']:'t'"}
        assert (await client.v1.customers.search_async(query)).data == []
        assert [c.id for c in (await client.v1.customers.list_async()).data] == [made.id]
        standin.clock.advance(61)
        assert [c.id for c in (await client.v1.customers.search_async(query)).data] == [made.id]

    async def test_customer_creation_can_be_refused_and_recover(
        self, standin: StripeStandin, client: stripe.StripeClient
    ) -> None:
        """With refuse_customers every customer create is a 400; switched off, creates work."""
        standin.set_switches(refuse_customers=True)
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.customers.create_async({"name": "n"})
        standin.set_switches(refuse_customers=False)
        assert (await client.v1.customers.create_async({"name": "n"})).name == "n"


class TestPriceLookups:
    async def test_prices_are_found_by_lookup_key(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """`lookup_keys[]` returns only the prices holding those keys (at most 10 keys)."""
        product = (await client.v1.prices.retrieve_async(prices.flat)).product
        keyed = await client.v1.prices.create_async(
            {"currency": "usd", "product": str(product), "unit_amount": 5, "lookup_key": "k1"}
        )
        found = await client.v1.prices.list_async({"lookup_keys": ["k1", "nothing"]})
        assert [(p.id, p.lookup_key) for p in found.data] == [(keyed.id, "k1")]
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.prices.list_async({"lookup_keys": [f"k{n}" for n in range(11)]})

    async def test_a_lookup_key_is_unique_unless_transferred(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """A second price with a lookup key in use is refused naming the holder;
        transfer_lookup_key moves the key to the new price."""
        product = str((await client.v1.prices.retrieve_async(prices.flat)).product)
        params: dict[str, object] = {
            "currency": "usd",
            "product": product,
            "unit_amount": 5,
            "lookup_key": "k",
        }
        first = await client.v1.prices.create_async(params)  # type: ignore[arg-type]
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.prices.create_async(params)  # type: ignore[arg-type]
        assert f"A price (`{first.id}`) already uses that lookup key." in str(raised.value)
        moved = await client.v1.prices.create_async({**params, "transfer_lookup_key": True})  # type: ignore[arg-type]
        assert (await client.v1.prices.retrieve_async(first.id)).lookup_key is None
        assert moved.lookup_key == "k"

    async def test_tiers_only_when_expanded(
        self, client: stripe.StripeClient, prices: Catalog
    ) -> None:
        """A tiered price's `tiers` are returned only with expand[]=tiers."""
        plain = await client.v1.prices.retrieve_async(prices.graduated)
        assert "tiers" not in plain.to_dict()
        expanded = await client.v1.prices.retrieve_async(prices.graduated, {"expand": ["tiers"]})
        assert [t.up_to for t in expanded.tiers] == [10, None]
