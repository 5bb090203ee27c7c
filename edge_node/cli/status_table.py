"""The status document (edge_node/cli/status.py) as the table `edge-node status` prints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

LABEL_WIDTH = 10


def render_table(status: dict[str, Any]) -> str:
    """One labelled row per part of the node; continuation lines are indented under it."""
    now = _parse(status["at"])
    sections = (
        ("daemon", list(_daemon_lines(status["daemon"]))),
        ("upgrade", [_upgrade_line(status.get("upgrade"))]),
        ("tenants", [_tenants_line(status["tenants"])]),
        ("queue", list(_queue_lines(status["queues"]))),
        ("postgres", list(_postgres_lines(status["postgres"], now))),
        ("stripe", list(_stripe_lines(status["stripe"], now))),
        ("set aside", [_set_aside_line(status["stripe"]["ledger"])]),
    )
    lines = [f"edge-node status of node {status['node_id']}, data dir {status['data_dir']}"]
    for label, rows in sections:
        for index, row in enumerate(rows):
            lines.append(f"{label if index == 0 else '':<{LABEL_WIDTH}} {row}")
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """A short human duration: `850 ms`, `4.2 s`, `3 min 05 s`, `2 h 03 min`, `4 d 06 h`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for unit, size, small, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size} {unit} {(whole % size) // small_size:02d} {small}"
    raise AssertionError("unreachable")


def _upgrade_line(upgrade: dict[str, Any] | None) -> str:
    if upgrade is None:
        return "none yet"
    versions = f"{upgrade['from_version']} -> {upgrade['to_version'] or '?'}"
    line = f"{upgrade['state'].replace('_', ' ')} at {upgrade['started_at']} ({versions})"
    if upgrade["reason"]:
        line += f": {upgrade['reason']}"
    return line


def _daemon_lines(daemon: dict[str, Any]) -> Iterator[str]:
    if daemon["state"] == "stopped":
        yield "stopped"
        return
    if daemon["state"] == "stale":
        yield f"stopped (pid {daemon['pid']} is gone: it did not stop cleanly)"
        return
    yield (
        f"running, pid {daemon['pid']}, up {duration(daemon['uptime_seconds'])},"
        f" edge-node {daemon['version']}"
    )
    yield f"listening on {', '.join(daemon['listen'])}"
    readiness = daemon.get("readiness")
    if readiness is None:
        return
    if readiness["state"] == "ready":
        damaged = readiness["damaged_tenants"]
        yield "ready" + (f"; damaged tenant files: {', '.join(damaged)}" if damaged else "")
    else:
        yield f"{readiness['state'].upper()}: {readiness['detail']}"


def _tenants_line(tenants: dict[str, int]) -> str:
    if not tenants:
        return "none"
    counts = ", ".join(f"{count} {status}" for status, count in sorted(tenants.items()))
    return f"{sum(tenants.values())} ({counts})"


def _queue_lines(queues: list[dict[str, Any]]) -> Iterator[str]:
    if not queues:
        yield "none yet (created when the daemon first serves)"
    for queue in queues:
        if "error" in queue:
            yield f"{queue['queue']}: cannot be read: {queue['error']}"
            continue
        age = queue["oldest_unconsumed_age_seconds"]
        oldest = "nothing unconsumed" if age is None else f"oldest unconsumed {duration(age)} old"
        yield (
            f"{queue['queue']}: depth {queue['depth']}, {oldest},"
            f" {_size(queue['bytes'])} in {queue['segments']} segment(s)"
        )


def _postgres_lines(postgres: dict[str, Any], now: datetime) -> Iterator[str]:
    if "shards" not in postgres:
        yield "not configured" if not postgres["configured"] else "no sync status written yet"
        return
    for shard in postgres["shards"]:
        yield (
            f"shard {shard['shard']} {shard['dsn']}: {shard['state']},"
            f" last success {_when(shard['last_success_at'], now)}"
            f"{_failures(shard['consecutive_failures'])}"
        )
        yield from _error_line(shard, now)


def _stripe_lines(stripe: dict[str, Any], now: datetime) -> Iterator[str]:
    if "jobs" not in stripe:
        yield "not configured" if not stripe["configured"] else "no job status written yet"
    for job in stripe.get("jobs", []):
        yield (
            f"{job['name']}: {job['state']}, last success {_when(job['last_success_at'], now)}"
            f"{_failures(job['consecutive_failures'])}"
        )
        yield from _error_line(job, now)
    yield from _unprovisioned_lines(stripe.get("unprovisioned", []), stripe["configured"])
    ledger = stripe["ledger"]
    if ledger["confirmed"]["batches"] or ledger["open"]["batches"]:
        open_age = ledger["oldest_open_age_seconds"]
        waiting = "" if open_age is None else f", the oldest planned {duration(open_age)} ago"
        yield (
            f"meter events: last confirmed {_when(ledger['last_confirmed_at'], now)};"
            f" {ledger['open']['batches']} open ({ledger['open']['units']} units){waiting}"
        )


def _unprovisioned_lines(tenants: list[dict[str, Any]], configured: bool) -> Iterator[str]:
    """Tenants without a Stripe customer or subscription: nothing of theirs can be billed."""
    failing = [t for t in tenants if t["state"] == "failing"]
    pending = len(tenants) - len(failing)
    if configured and pending:
        yield f"{pending} tenant(s) not provisioned yet"
    for tenant in failing:
        yield (
            f"tenant {tenant['tenant_id']} ({tenant['name']}): provisioning failing for"
            f" {duration(tenant['failing_for_seconds'])}, no {' or '.join(tenant['missing'])}"
        )
        yield f"  last error: {tenant['last_error']}"


def _set_aside_line(ledger: dict[str, Any]) -> str:
    aside = ledger["set_aside"]
    if not aside["batches"]:
        return "no usage set aside"
    return (
        f"{aside['batches']} batch(es), {aside['units']} units not billed"
        " (see `edge-node billing reconcile`)"
    )


def _error_line(part: dict[str, Any], now: datetime) -> Iterator[str]:
    if part.get("last_error"):
        yield f"  last error {_when(part['last_error_at'], now)}: {part['last_error']}"


def _failures(count: int) -> str:
    return f", {count} failure(s) in a row" if count else ""


def _when(timestamp: str | None, now: datetime) -> str:
    if timestamp is None:
        return "never"
    return f"{timestamp} ({duration(max(0.0, (now - _parse(timestamp)).total_seconds()))} ago)"


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
