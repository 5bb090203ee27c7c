"""A wall clock stepped back under a running daemon (libfaketime, the offset changed in its
file while the daemon runs): cursor order and usage-event timestamps never move backwards."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.faults.daemon import FaultNode
from tests.faults.load import queued_events

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _call(url: str, tenant: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{url}/v1/tenants/{tenant['tenant_id']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": tenant["api_key"], "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class TestClockSteppedBack:
    def test_a_rating_made_after_a_step_back_is_seen_by_a_client_paging_through(
        self, tmp_path: Path
    ) -> None:
        """Four ratings, a client reads the first page, the daemon's wall clock steps back one
        hour, a fifth rating is made: paging on from the client's cursor reaches it, and the
        usage events' timestamps never decrease in queue order."""
        if not LIBFAKETIME.exists():
            reason = f"{LIBFAKETIME} is missing (apt-get install faketime, or make faketime)"
            if os.environ.get("REQUIRE_FAKETIME") == "1":
                pytest.fail(reason)
            print(reason)
            pytest.skip(reason)
        offset = tmp_path / "faketime"
        offset.write_text("+0\n")
        node = FaultNode(
            tmp_path / "data",
            tmp_path / "logs",
            {
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(offset),
                "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            },
        )
        tenant = node.tenant("clock")
        try:
            url = node.serve()
            for n in range(4):
                _call(
                    url,
                    tenant,
                    "POST",
                    "/ratings",
                    {"user_id": f"u{n}", "item_id": "i", "score": 3},
                )
            first = _call(url, tenant, "GET", "/ratings?item_id=i&limit=2")
            offset.write_text("-3600\n")
            time.sleep(0.2)
            _call(url, tenant, "POST", "/ratings", {"user_id": "after", "item_id": "i", "score": 5})
            seen = [rating["user_id"] for rating in first["ratings"]]
            cursor = first["next_cursor"]
            while cursor is not None:
                page = _call(url, tenant, "GET", f"/ratings?item_id=i&limit=2&cursor={cursor}")
                seen += [rating["user_id"] for rating in page["ratings"]]
                cursor = page["next_cursor"]
            assert seen == ["u0", "u1", "u2", "u3", "after"]
            assert node.stop() == 0
        finally:
            node.kill()
        stamps = [
            event.timestamp_ms for event in queued_events(node.data_dir / "queue" / "worker-0")
        ]
        assert len(stamps) == 8  # five writes, three pages
        assert stamps == sorted(stamps)
