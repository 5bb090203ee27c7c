"""guarded: a route declares what it bills with entries of the operation table."""

from __future__ import annotations

import pytest
from aiohttp import web

from edge_node.admission.billable import guarded
from edge_node.admission.router import TenantContext
from edge_node.usage.operations import RATING_CREATE, SCORE_READ, Operation

UNLISTED = Operation("rating.export", "an export of every rating")


async def handler(request: web.Request, context: TenantContext) -> web.StreamResponse:
    return web.Response()


class TestDeclaredOperations:
    def test_an_operation_outside_the_table_is_refused_when_the_route_is_declared(self) -> None:
        """A route naming an operation the table lacks fails at import, instead of serving
        requests that the meter, knowing only the table's operations, would bill as nothing."""
        with pytest.raises(ValueError, match=r"rating\.export is not in"):
            guarded("reader", UNLISTED)
        with pytest.raises(ValueError, match=r"rating\.export is not in"):
            guarded("writer", {201: RATING_CREATE, 200: UNLISTED})

    def test_entries_of_the_table_are_accepted_alone_or_by_status(self) -> None:
        """One operation, or one per response status, each an entry of the table."""
        assert callable(guarded("reader", SCORE_READ)(handler))
        assert callable(guarded("writer", {201: RATING_CREATE, 200: SCORE_READ})(handler))
