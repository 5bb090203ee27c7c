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
# "lagging": the last round succeeded, but downloads are behind the central database by more
# than central.horizon_lag_warning_seconds (a long central transaction holds the horizon back).
ShardState = Literal["starting", "ok", "lagging", "retrying", "stopped"]


# The shard status's moments (microseconds since the epoch), written as edge_node.clock.format_us
# text and parsed back by sync/status_files.py.
SHARD_TIME_FIELDS = (
    "last_attempt_at",
    "last_success_at",
    "last_error_at",
    "next_attempt_at",
    "last_download_at",
    "downloaded_through_at",
)


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
    # Tenants failing on their own (sync/replication/tenant_failures.py): in backoff now, failures
    # in all.
    failing_tenants: int = 0
    tenant_failures: int = 0
    last_tenant_error: str | None = None
    # Download lag. last_download_at: when a round last read the shard's rating changes up
    # to the horizon. downloaded_through_at: every central change committed before it has
    # been downloaded (None: not known yet); horizon_lag_xids: transactions between the
    # horizon and the round's durable bound, 0 when nothing holds the horizon back.
    last_download_at: int | None = None
    downloaded_through_at: int | None = None
    horizon_lag_xids: int | None = None
    # Downloads read from a hot standby (central.standby_dsns): how far its replay was behind
    # the primary at the end of the last round, 0 when it had replayed everything received
    # (None: no standby, or not measured yet).
    standby_lag_seconds: float | None = None

    def horizon_lag_seconds(self, now_us: int) -> float | None:
        """How far downloads are behind the central database now; grows while it is stuck."""
        if self.downloaded_through_at is None:
            return None
        return round(max(0, now_us - self.downloaded_through_at) / 1e6, 3)

    def to_json(self, now_us: int) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["horizon_lag_seconds"] = self.horizon_lag_seconds(now_us)
        for name in SHARD_TIME_FIELDS:
            value = document[name]
            document[name] = None if value is None else format_us(value)
        oldest = document.pop("oldest_pending_at")
        document["oldest_pending_age_seconds"] = (
            None if oldest is None else round(max(0, now_us - oldest) / 1e6, 3)
        )
        return document


@dataclass(frozen=True)
class SyncSnapshot:
    """Everything the sync worker can tell at one instant, for the status file and metrics:
    copies, so a reader never sees a round half-way through updating them."""

    node_id: str
    taken_at: int  # microseconds since the epoch
    shards: tuple[ShardStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "written_at": format_us(self.taken_at),
            "shards": [shard.to_json(self.taken_at) for shard in self.shards],
        }


def write_status_file(data_dir: Path, node_id: str, shards: list[ShardStatus], now_us: int) -> None:
    """Replace the status file atomically (no fsync: it is rewritten every few seconds)."""
    document = SyncSnapshot(node_id, now_us, tuple(shards)).to_json()
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
