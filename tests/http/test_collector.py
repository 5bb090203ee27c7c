"""While an app serves, the garbage collector is set for serving; once it stops, it is as before."""

from __future__ import annotations

import gc

from aiohttp import web

from edge_node.http.collector import YOUNG_THRESHOLD, collector_for_serving


class TestCollectorForServing:
    async def test_set_while_serving_and_restored_after_the_last_app(self) -> None:
        """Two apps overlapping: the collector is set from the first start to the last stop."""
        before, frozen = gc.get_threshold(), gc.get_freeze_count()
        first, second = (
            collector_for_serving(web.Application()),
            collector_for_serving(web.Application()),
        )
        await anext(first)
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        assert gc.get_freeze_count() > frozen
        await anext(second)
        await first.aclose()
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        await second.aclose()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
