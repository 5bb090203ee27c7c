"""What the sync worker reports per shard, and the status file `edge-node sync status` reads.

The daemon and the CLI are different processes, so the worker rewrites `sync-status.json` in
the data directory after every attempt (written to a temporary name, then renamed, so a
reader never sees half a file). `ShardStatus` is also what metrics read in the daemon.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from edge_node.clock import format_us

FILE_NAME = "sync-status.json"
ShardState = Literal["starting", "ok", "retrying", "stopped"]


@dataclass
class ShardStatus:
    """One shard's sync health. Times are microseconds since the epoch."""

    shard: int
    dsn: str  # password redacted
    state: ShardState = "starting"
    last_attempt_at: int | None = None
    last_success_at: int | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    consecutive_failures: int = 0
    next_attempt_at: int | None = None
    tenants: int = 0
    # Lag: tenants of this shard with outbox entries, and when the oldest waiting row was
    # last written locally, as of the last attempt (None: nothing waits).
    pending_tenants: int = 0
    oldest_pending_at: int | None = None
    # Totals since the worker started.
    uploaded_rows: int = 0
    downloaded_rows: int = 0
    applied_rows: int = 0
    registry_uploaded: int = 0
    registry_applied: int = 0
    set_aside_rows: int = 0

    def to_json(self, now_us: int) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        for name in ("last_attempt_at", "last_success_at", "last_error_at", "next_attempt_at"):
            value = document[name]
            document[name] = None if value is None else format_us(value)
        oldest = document.pop("oldest_pending_at")
        document["oldest_pending_age_seconds"] = (
            None if oldest is None else round(max(0, now_us - oldest) / 1e6, 3)
        )
        return document


def write_status_file(data_dir: Path, node_id: str, shards: list[ShardStatus], now_us: int) -> None:
    """Replace the status file atomically (no fsync: it is rewritten every few seconds)."""
    document = {
        "node_id": node_id,
        "pid": os.getpid(),
        "written_at": format_us(now_us),
        "shards": [shard.to_json(now_us) for shard in shards],
    }
    replace_status_document(data_dir / FILE_NAME, document)


def read_status_file(data_dir: Path) -> dict[str, Any] | None:
    """The last status the daemon wrote, or None when it never wrote one."""
    try:
        document: dict[str, Any] = orjson.loads((data_dir / FILE_NAME).read_bytes())
    except FileNotFoundError:
        return None
    return document


def replace_status_document(path: Path, document: dict[str, Any]) -> None:
    """Write a status file under a temporary name, then rename it over the old one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)
