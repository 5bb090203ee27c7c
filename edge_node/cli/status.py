"""`edge-node status`: one view of a node, whether its daemon runs or not, read without locks.

Everything comes from the data directory: the daemon's runtime file (edge_node/cli/runtime_file.py),
node.sqlite opened read-only (tenants by status, the billing ledger), the queue directories
inspected from outside (edge_node/queue/inspection.py), and the files the sync worker rewrites
while it runs (`sync-status.json` for PostgreSQL, `sync-jobs.json` for the Stripe jobs). A
stopped node shows the last state its daemon wrote.
"""

from __future__ import annotations

import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from edge_node import sqlite
from edge_node.cli.runtime_file import RuntimeFile, process_alive
from edge_node.cli.upgrade_record import UpgradeFile
from edge_node.clock import format_us
from edge_node.config import Config
from edge_node.queue import QueueError, QueueStatus, inspect_queue
from edge_node.tenants.registry import Unprovisioned, count_by_status, unprovisioned
from sync.billing.ledger import ledger_totals

READINESS_TIMEOUT_SECONDS = 3.0


def collect_status(config: Config, now_us: int) -> dict[str, Any]:
    """The status document of the node whose data directory `config` names."""
    data_dir = config.data_path
    postgres, jobs = _sync_documents(data_dir)
    tenants, billing, unprovisioned = _node_database(data_dir / "node.sqlite", now_us)
    return {
        "node_id": config.node_id,
        "data_dir": str(data_dir.resolve()),
        "at": format_us(now_us),
        "daemon": daemon_status(data_dir, now_us),
        "upgrade": _last_upgrade(data_dir),
        "tenants": tenants,
        "queues": [_queue_summary(path, now_us) for path in queue_directories(data_dir)],
        "postgres": {"configured": bool(config.central.dsns), **(postgres or {})},
        "stripe": {
            "configured": config.stripe.enabled,
            **(jobs or {}),
            "ledger": billing,
            "unprovisioned": [_unprovisioned(t, now_us) for t in unprovisioned],
        },
    }


def daemon_status(data_dir: Path, now_us: int) -> dict[str, Any]:
    """`running` with where it listens and for how long, `stopped`, or `stale` (killed)."""
    record = RuntimeFile(data_dir).read()
    if record is None:
        return {"state": "stopped"}
    document: dict[str, Any] = record.to_json()
    del document["started_at_us"]
    if not process_alive(record.pid):
        return {"state": "stale", **document}
    uptime = round(max(0, now_us - record.started_at) / 1e6, 3)
    readiness = ask_readiness(record.listen[0]) if record.listen else None
    return {"state": "running", **document, "uptime_seconds": uptime, "readiness": readiness}


def ask_readiness(url: str) -> dict[str, Any]:
    """The running daemon's own `GET /readyz`, asked over loopback: `ready` and the damaged
    tenants it lists, or `not ready` and why, or `no answer` (a wedged or busy daemon)."""
    probe = _loopback_probe(url)
    if probe is None:
        return {"state": "no answer", "detail": f"{url} is not an http(s) address"}
    # The daemon's certificate names its public host; this probe goes over loopback.
    context = ssl._create_unverified_context() if probe.startswith("https:") else None  # noqa: S323
    try:
        with urllib.request.urlopen(  # noqa: S310 (the scheme is http or https, checked)
            probe, timeout=READINESS_TIMEOUT_SECONDS, context=context
        ) as answer:
            document = orjson.loads(answer.read())
            return {"state": "ready", "damaged_tenants": document.get("damaged_tenants", [])}
    except urllib.error.HTTPError as refused:
        with refused:
            return {"state": "not ready", "detail": _problem_detail(refused.read())}
    except (OSError, ValueError) as exc:
        return {"state": "no answer", "detail": str(exc)}


def _loopback_probe(url: str) -> str | None:
    """`url`'s /readyz, a wildcard listen address (0.0.0.0, ::) asked on loopback."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.port is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(parts.hostname or "", parts.hostname)  # noqa: S104
    netloc = f"[{host}]:{parts.port}" if ":" in str(host) else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "/readyz", "", ""))


def _problem_detail(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("detail", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return body.decode(errors="replace")[:200]


def _last_upgrade(data_dir: Path) -> dict[str, Any] | None:
    """The last upgrade of the workers (upgrade_record.py), or None when there was none."""
    record = UpgradeFile(data_dir).read()
    if record is None:
        return None
    document = record.to_json()
    del document["started_at_us"], document["finished_at_us"]
    return document


def queue_directories(data_dir: Path) -> list[Path]:
    """Every worker's queue directory, in order."""
    return sorted(path for path in (data_dir / "queue").glob("worker-*") if path.is_dir())


def _queue_summary(directory: Path, now_us: int) -> dict[str, Any]:
    try:
        status = inspect_queue(directory)
    except (QueueError, OSError) as exc:
        return {"queue": directory.name, "error": str(exc)}
    return {"queue": directory.name, **_queue_figures(status, now_us // 1000)}


def _queue_figures(status: QueueStatus, now_ms: int) -> dict[str, Any]:
    """Depth is the most lagging consumer's; the age is of the oldest record any has left."""
    oldest = min(
        (
            c.oldest_unconsumed_timestamp_ms
            for c in status.consumers.values()
            if c.oldest_unconsumed_timestamp_ms is not None
        ),
        default=None,
    )
    return {
        "depth": max((c.depth for c in status.consumers.values()), default=0),
        "oldest_unconsumed_age_seconds": None
        if oldest is None
        else round(max(0, now_ms - oldest) / 1000, 3),
        "bytes": status.bytes,
        "segments": status.segment_count,
        "last_seq": status.last_seq,
        "consumers": {name: c.cursor for name, c in status.consumers.items()},
    }


def _sync_documents(data_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What the sync worker last wrote: its shards (PostgreSQL) and its jobs (Stripe)."""
    # Imported here, as the CLI does: these modules read files and load no driver or SDK.
    from sync.job_status_file import read_jobs_file  # noqa: PLC0415
    from sync.status import read_status_file  # noqa: PLC0415

    shards, jobs = read_status_file(data_dir), read_jobs_file(data_dir)
    return (
        None if shards is None else {key: shards[key] for key in ("written_at", "shards")},
        None if jobs is None else {key: jobs[key] for key in ("written_at", "jobs")},
    )


def _node_database(
    path: Path, now_us: int
) -> tuple[dict[str, int], dict[str, Any], list[Unprovisioned]]:
    """Tenants by status, the billing ledger's totals by state and the tenants not
    provisioned in Stripe, read-only."""
    tenants: dict[str, int] = {}
    states: dict[str, tuple[int, int, int | None, int | None]] = {}
    waiting: list[Unprovisioned] = []
    if path.exists():
        with sqlite.read_only(path) as conn:
            try:
                tenants = count_by_status(conn)
                waiting = unprovisioned(conn)
                states = ledger_totals(conn)
            except sqlite3.OperationalError:  # a file older than its tables: nothing yet
                pass
    return tenants, _ledger_summary(states, now_us), waiting


def _unprovisioned(tenant: Unprovisioned, now_us: int) -> dict[str, Any]:
    """A tenant Stripe has no customer or subscription of yet: `pending`, or `failing`
    with the last error and for how long."""
    since = tenant.failing_since
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "state": "pending" if since is None else "failing",
        "missing": [
            part
            for part, has in (
                ("customer", tenant.has_customer),
                ("subscription", tenant.has_subscription),
            )
            if not has
        ],
        "failing_since": None if since is None else format_us(since),
        "failing_for_seconds": None if since is None else round(max(0, now_us - since) / 1e6, 3),
        "last_error": tenant.error,
    }


def _ledger_summary(
    states: dict[str, tuple[int, int, int | None, int | None]], now_us: int
) -> dict[str, Any]:
    def totals(*names: str) -> dict[str, int]:
        return {
            "batches": sum(states[n][0] for n in names if n in states),
            "units": sum(states[n][1] for n in names if n in states),
        }

    open_since = [
        planned for n in ("planned", "sent") if (planned := states.get(n, (0, 0, None, None))[2])
    ]
    confirmed_at = states.get("confirmed", (0, 0, None, None))[3]
    return {
        "confirmed": totals("confirmed"),
        "open": totals("planned", "sent"),
        "set_aside": totals("set_aside"),
        "last_confirmed_at": None if confirmed_at is None else format_us(confirmed_at),
        "oldest_open_age_seconds": round(max(0, now_us - min(open_since)) / 1e6, 3)
        if open_since
        else None,
    }
