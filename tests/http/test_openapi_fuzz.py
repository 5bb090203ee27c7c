"""Schemathesis fuzzes the running daemon from its OpenAPI document: no 5xx, no schema breach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from edge_node.http.openapi import openapi_document
from edge_node.tenants.webhook_signature import signature_header
from edge_node.tenants.webhooks import WEBHOOK_PATH

EXAMPLES = int(os.environ.get("EDGE_NODE_FUZZ_EXAMPLES", "40"))
WEBHOOK_SECRET = "whsec_fuzz_5d0e4c3b2a1f9e8d7c6b"


def edge_node(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_node.cli", *args]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real daemon in a subprocess, with one tenant whose admin key the fuzzer uses and a
    webhook signing secret (so the webhook route verifies rather than answering 404)."""
    directory = tmp_path_factory.mktemp("fuzz")
    data_dir = str(directory / "var")
    (directory / "whsec").write_text(WEBHOOK_SECRET)
    created = subprocess.run(
        edge_node(
            "--data-dir",
            data_dir,
            "tenants",
            "create",
            "--name",
            "fuzz",
            "--rate-limit",
            "100000000",
        ),
        capture_output=True,
        check=True,
        text=True,
        env={**os.environ, "EDGE_NODE_NODE_ID": "fz"},
    )
    tenant = json.loads(created.stdout)
    process = subprocess.Popen(
        edge_node("--data-dir", data_dir, "serve", "--port", "0"),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGE_NODE_WEBHOOKS_SECRET_FILE": str(directory / "whsec")},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        yield {"url": url, **tenant}
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        if process.stdout:
            process.stdout.close()


def issued_cursor(daemon: dict[str, Any]) -> str:
    """A cursor the server itself issued: cursors are opaque, so only these are valid input."""
    base = f"{daemon['url']}/v1/tenants/{daemon['tenant_id']}/ratings"
    for user in ("seed-a", "seed-b"):
        request = urllib.request.Request(
            base,
            method="POST",
            data=json.dumps({"user_id": user, "item_id": "seed", "score": 4}).encode(),
            headers={"X-API-Key": daemon["api_key"], "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request).close()
    request = urllib.request.Request(f"{base}?limit=1", headers={"X-API-Key": daemon["api_key"]})
    with urllib.request.urlopen(request) as response:
        return str(json.load(response)["next_cursor"])


def pinned(document: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The served document with some parameters fixed to known-good values."""
    copy = json.loads(json.dumps(document))
    for path in copy["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in values:
                    parameter["schema"] = {"type": "string", "enum": [values[parameter["name"]]]}
    return copy


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(daemon: dict[str, Any], mode: GenerationMode) -> None:
    """Generated valid and invalid requests get documented answers, never a 5xx."""
    with urllib.request.urlopen(daemon["url"] + "/v1/openapi.json") as response:
        document = json.load(response)
    config = SchemathesisConfig.from_dict(
        {
            "base-url": daemon["url"],
            "generation": {"with-security-parameters": False},
            # A body over the size limit is rejected with 413, which is a rejection too.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 413, 415, 429],
                },
            },
        }
    )
    # The tenant is always ours (other tenants are the isolation tests' business); in positive
    # mode the cursor is a real one, since no other opaque string is valid input.
    values = {"tenant_id": daemon["tenant_id"]}
    if mode is GenerationMode.POSITIVE:
        values["cursor"] = issued_cursor(daemon)
    schema = schemathesis.openapi.from_dict(pinned(document, values), config=config)
    headers = {"X-API-Key": daemon["api_key"]}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/v1/tenants/"):
            continue  # health, readiness, metrics and the document take no input to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            if mode is GenerationMode.POSITIVE and case.path == WEBHOOK_PATH:
                case.call_and_validate(**signed_by_stripe(case, headers))
            else:
                case.call_and_validate(headers=headers)

        exercise()


def signed_by_stripe(case: schemathesis.Case, headers: dict[str, str]) -> dict[str, Any]:
    """The webhook's generated event as a body signed with the endpoint's secret.

    A valid webhook request is one Stripe signed; no generated Stripe-Signature can be (the
    unsigned ones are answered 400, which positive_data_acceptance rightly refuses as a
    rejection of valid data). So in positive mode the test serialises the body itself and
    signs those bytes, and the generated events reach parsing and the tenant registry.
    """
    payload = json.dumps(case.body).encode()
    signature = signature_header(payload, [WEBHOOK_SECRET], int(time.time()))
    return {
        "headers": {
            **headers,
            "Content-Type": "application/json",
            "Stripe-Signature": signature,
        },
        "data": payload,
    }


def test_document_is_the_one_served(daemon: dict[str, Any]) -> None:
    """The served document is the one the package builds (a test guards against drift)."""
    with urllib.request.urlopen(daemon["url"] + "/v1/openapi.json") as response:
        assert json.load(response) == json.loads(json.dumps(openapi_document()))
