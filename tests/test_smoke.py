"""The node answers over real HTTP."""

from tests.support import RunningNode


async def test_health_and_a_rating_round_trip(node: RunningNode) -> None:
    """A created tenant can write a rating and read the item's score back."""
    tenant = node.create_tenant()
    async with node.session.get(f"{node.url}/healthz") as response:
        assert response.status == 200
    url = node.tenant_url(tenant.tenant_id, "/ratings")
    body = {"user_id": "u", "item_id": "i", "score": 3}
    async with node.session.post(url, headers=tenant.headers, json=body) as response:
        assert response.status == 201
    async with node.session.get(
        node.tenant_url(tenant.tenant_id, "/items/i/score"), headers=tenant.headers
    ) as response:
        assert (await response.json())["count"] == 1
