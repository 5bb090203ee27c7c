"""The API docs page: /docs in a real browser (Debian's chromium, driven by playwright) renders
every operation of the served OpenAPI document with its examples, from the node alone."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node.http.openapi import openapi_document
from tests.served import ServedNode

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing of the browser's own reaching out (updates, first-run pages).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RENDER_TIMEOUT_MS = 30_000


def operations() -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every operation in the document."""
    return [
        (method, path, operation["operationId"])
        for path, methods in openapi_document()["paths"].items()
        for method, operation in methods.items()
    ]


def _browser_missing() -> str | None:
    """Why no browser test can run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (make test installs Debian's chromium: make chromium)"
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "the playwright package is not installed (make install)"
    return None


@pytest.fixture
def page(tmp_path: Path, served_nodes: list[ServedNode]) -> Iterator[tuple[Any, ServedNode]]:
    """A chromium page, and a node serving the docs."""
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    node = ServedNode(tmp_path / "data", log=tmp_path / "log")
    served_nodes.append(node)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser.new_page(), node
        finally:
            browser.close()


class TestDocsPage:
    def test_every_operation_renders_from_the_node_alone(
        self, page: tuple[Any, ServedNode]
    ) -> None:
        """/ leads to /docs, where Swagger UI renders every operation of /v1/openapi.json
        (each by its operationId), and every file the page loads comes from the node: no
        CDN, nothing from elsewhere."""
        browser_page, node = page
        requested: list[str] = []
        browser_page.on("request", lambda request: requested.append(request.url))
        browser_page.goto(node.url + "/", timeout=RENDER_TIMEOUT_MS)
        assert browser_page.url == node.url + "/docs"
        blocks = browser_page.locator(".opblock")
        expected = operations()
        blocks.nth(len(expected) - 1).wait_for(timeout=RENDER_TIMEOUT_MS)
        assert blocks.count() == len(expected)
        for method, path, op_id in expected:
            block = browser_page.locator(f"#operations-default-{op_id}")
            assert block.count() == 1, op_id
            assert block.locator(".opblock-summary-method").inner_text().lower() == method
            assert path in block.locator(".opblock-summary-path").inner_text().replace("\u200b", "")
        assert requested, "the page loaded nothing"
        assert all(url.startswith(node.url + "/") for url in requested), requested

    def test_an_operation_shows_its_example_request_and_response(
        self, page: tuple[Any, ServedNode]
    ) -> None:
        """Opening `upsertRating` shows the example body to send and the example rating it
        answers, as the document gives them."""
        browser_page, node = page
        browser_page.goto(node.url + "/docs", timeout=RENDER_TIMEOUT_MS)
        operation = browser_page.locator("#operations-default-upsertRating")
        operation.locator(".opblock-summary").click()
        body = operation.locator(".body-param__example, .opblock-section-request-body")
        body.first.wait_for(timeout=RENDER_TIMEOUT_MS)
        text = operation.inner_text()
        assert '"item_id": "book-42"' in text
        assert '"score": 5' in text
        assert '"comment": "great"' in text
        assert "0b7d2c9e-51a4-4f0e-8c36-2e9d7a1f4b58" in text  # the example rating's id


class TestDocsFiles:
    def test_the_page_and_swagger_ui_are_served_with_a_strict_policy(
        self, tmp_path: Path, served_nodes: list[ServedNode]
    ) -> None:
        """The page allows scripts from the node only; Swagger UI's files ship with the
        package (their version and licence recorded beside them)."""
        node = ServedNode(tmp_path / "data", log=tmp_path / "log")
        served_nodes.append(node)
        with urllib.request.urlopen(node.url + "/docs", timeout=10) as response:
            policy = response.headers["Content-Security-Policy"]
            html = response.read().decode()
        assert "script-src 'self'" in policy
        assert "/docs/static/swagger-ui/swagger-ui-bundle.js" in html
        script = node.url + "/docs/static/swagger-ui/swagger-ui-bundle.js"
        with urllib.request.urlopen(script, timeout=10) as response:
            assert response.status == 200
        status, document, _ = node.request("GET", "/docs/static/../../app.py")
        assert status in (403, 404), document
        version = Path(__file__).parents[2] / "edge_node/http/docs_static/swagger-ui/VERSION"
        assert "licence: Apache-2.0" in version.read_text()
        assert json.dumps(openapi_document())  # the page's document is served as JSON
