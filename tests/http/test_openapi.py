"""The OpenAPI document says what each tenant route bills, and it is what the route bills."""

from __future__ import annotations

from typing import Any

from edge_node.http.app import create_app
from edge_node.http.openapi import openapi_document
from edge_node.usage.operations import OPERATIONS
from tests.support import RunningNode
from tests.usage.test_meter import events_on_disk

TENANT_PREFIX = "/v1/tenants/{tenant_id}"
USAGE_OPERATION = "x-usage-operation"  # as published: clients may read it
UNBILLED_PATHS = {TENANT_PREFIX + "/usage"}  # the tenant's own usage bills nothing


async def serve_every_billed_answer(node: RunningNode) -> dict[str, tuple[str, str, int]]:
    """One request for each answer a tenant route bills: request id -> (method, path, status)."""
    tenant = node.create_tenant()
    url = node.tenant_url(tenant.tenant_id)
    body = {"user_id": "u1", "item_id": "i1", "score": 3}
    served: dict[str, tuple[str, str, int]] = {}
    rating_id = ""

    async def call(method: str, path: str, template: str, request_id: str, **extra: Any) -> None:
        nonlocal rating_id
        headers = {**tenant.headers, "X-Request-Id": request_id}
        async with node.session.request(method, url + path, headers=headers, **extra) as answer:
            if answer.status == 201:
                rating_id = (await answer.json())["id"]
            served[request_id] = (method, TENANT_PREFIX + template, answer.status)

    await call("POST", "/ratings", "/ratings", "create", json=body)
    await call("POST", "/ratings", "/ratings", "update", json=body)
    await call("GET", "/ratings", "/ratings", "list")
    await call("GET", "/items/i1/score", "/items/{item_id}/score", "score")
    await call("DELETE", f"/ratings/{rating_id}", "/ratings/{rating_id}", "delete")
    await call("DELETE", "/users/u1", "/users/{user_id}", "erase")
    return served


def documented_operation(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    return response.get(USAGE_OPERATION)


class TestBilledOperations:
    async def test_each_billed_answer_names_the_operation_it_is_billed_as(
        self, node: RunningNode
    ) -> None:
        """Every tenant route is exercised, and each answer's usage event carries exactly the
        operation its response declares in x-usage-operation, an entry of the table."""
        async with node.session.get(f"{node.url}/v1/openapi.json") as response:
            document = await response.json()
        served = await serve_every_billed_answer(node)
        tenant_routes = {
            (route.method, route.resource.canonical)
            for route in create_app(node.config, node.storage, node.meter).router.routes()
            if route.resource is not None and route.resource.canonical.startswith(TENANT_PREFIX)
        }
        assert {(method, path) for method, path, _ in served.values()} == tenant_routes
        billed = {event.request_id: event.operation for event in events_on_disk(node)}
        assert set(billed) == set(served)
        table = {operation.name for operation in OPERATIONS}
        for request_id, (method, path, status) in served.items():
            declared = documented_operation(document, method, path, status)
            assert declared == billed[request_id], f"{method} {path} {status}"
            assert declared in table

    async def test_each_billing_route_says_what_it_bills_and_the_default_units(
        self, node: RunningNode
    ) -> None:
        """A route's description names each operation it bills, its default units and the
        setting that changes them; every tenant route bills but the tenant's usage, which
        says it bills nothing."""
        async with node.session.get(f"{node.url}/v1/openapi.json") as response:
            document = await response.json()
        by_name = {operation.name: operation for operation in OPERATIONS}
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                declared = {
                    response[USAGE_OPERATION]
                    for response in operation["responses"].values()
                    if USAGE_OPERATION in response
                }
                billed = path.startswith(TENANT_PREFIX) and path not in UNBILLED_PATHS
                assert bool(declared) == billed, f"{method} {path}"
                if path in UNBILLED_PATHS:
                    assert "Bills nothing" in operation["description"]
                for name in declared:
                    entry = by_name[name]
                    assert f"`{name}`" in operation["description"]
                    assert f"{entry.default_units} unit" in operation["description"]
                    assert f"`meter.units.{entry.setting}`" in operation["description"]


class TestExamples:
    """Every operation carries an example request and response, each valid for its schema."""

    @staticmethod
    def _validate(document: dict[str, Any], schema: dict[str, Any], example: Any) -> None:
        import jsonschema_rs  # noqa: PLC0415 (schemathesis's validator, installed with it)

        rooted = {**schema, "components": document["components"]}
        jsonschema_rs.Draft202012Validator(rooted, validate_formats=True).validate(example)

    def test_every_operation_has_examples_valid_for_their_schemas(self) -> None:
        """Each parameter, request body and answer body of every operation has an example
        (the docs page shows them) that its schema accepts."""
        document = openapi_document()
        for methods in document["paths"].values():
            for operation in methods.values():
                for parameter in operation.get("parameters", []):
                    self._validate(document, parameter["schema"], parameter["example"])
                for media in operation.get("requestBody", {}).get("content", {}).values():
                    self._validate(document, media["schema"], media["example"])
                answered = [
                    (status, media)
                    for status, response in operation["responses"].items()
                    for media in response.get("content", {}).values()
                ]
                assert answered, operation["operationId"]
                for status, media in answered:
                    assert "example" in media, (operation["operationId"], status)
                    if "schema" in media:
                        self._validate(document, media["schema"], media["example"])
