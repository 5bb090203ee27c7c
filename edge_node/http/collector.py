"""The cyclic garbage collector set for serving: start-up objects frozen, young collections rare.

Python collects its youngest generation every 700 net allocations of container objects. A
served request leaves almost nothing behind, but while 64 requests are in flight their
frames, coroutines and dicts are a few thousand young objects, so that threshold is crossed
every few dozen requests and each collection walks every request in flight: several µs a
request (measured with bench.request_path). A threshold above what requests in flight hold
makes young collections rare without letting garbage pile up (each is still collected once
that many objects have gathered). The objects made before serving (modules, configuration,
the app, the registry's view) live as long as the process: frozen (`gc.freeze`), the oldest
generation's collections no longer walk them again and again.

The first app to start sets this and the last to stop puts the collector back as it was, so
that tests running apps one after another in one process leave it unchanged.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

from aiohttp import web

# Net young container allocations between collections while serving (Python's default: 700).
YOUNG_THRESHOLD = 50_000

_serving = 0
_restore: tuple[int, int, int] = gc.get_threshold()


async def collector_for_serving(_app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the collector set for serving while the app runs."""
    global _serving, _restore  # noqa: PLW0603 - one collector per process, shared by its apps
    if _serving == 0:
        _restore = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(YOUNG_THRESHOLD, _restore[0]), *_restore[1:])
    _serving += 1
    try:
        yield
    finally:
        _serving -= 1
        if _serving == 0:
            gc.set_threshold(*_restore)
            gc.unfreeze()
