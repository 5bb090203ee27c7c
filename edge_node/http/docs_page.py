"""The API docs page: Swagger UI at /docs over the served /v1/openapi.json, and / leading there.

Swagger UI is vendored from the npm registry's `swagger-ui-dist` into docs_static/swagger-ui
(scripts/vendor-swagger-ui.sh records its version and licence) and ships in the wheel as
package data, so the page works offline and asks no CDN for anything. The page carries a
Content-Security-Policy allowing only this node's own scripts and styles.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("docs_static")
# The page's routes: a page about the API, not part of it (the API document leaves them out).
PATHS = frozenset({"/", "/docs", "/docs/static"})
# Swagger UI sets inline styles and shows data: images; scripts come from this node only.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def add_docs_routes(app: web.Application) -> None:
    """GET /docs (the page), /docs/static/... (its files) and / (a redirect to /docs)."""
    app.router.add_get("/", _root, allow_head=False)
    app.router.add_get("/docs", _page, allow_head=False)
    app.router.add_static("/docs/static", STATIC, append_version=False)


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/docs")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"},
    )
