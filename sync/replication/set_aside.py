"""Rows the central database refuses for good: found by bisection, written to a file, counted.

A batch that fails with PermanentSyncError (a constraint violation, an invalid value) fails the
same way on every retry, so retrying it would wedge the tenant's outbox forever. Instead the
batch is split in halves until each refused row stands alone; every other row is uploaded,
and each refused row is appended to `sync-set-aside.jsonl` in the data directory (synced to
disk) with the error, before its outbox entry is acknowledged. The row itself stays in the
edge's own database; a later local write of it queues it again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import orjson

from edge_node.clock import format_us, now_us
from edge_node.errors import PermanentSyncError

Row = TypeVar("Row")
FILE_NAME = "sync-set-aside.jsonl"


async def send_or_set_aside(
    send: Callable[[Sequence[Row]], Awaitable[int]], rows: Sequence[Row]
) -> tuple[int, list[tuple[Row, str]]]:
    """Send `rows`, bisecting on PermanentSyncError; (rows changed, [(refused row, error)]).
    TransientSyncError propagates: nothing is set aside for a failure that is not the data's."""
    try:
        return await send(rows), []
    except PermanentSyncError as exc:
        if len(rows) == 1:
            return 0, [(rows[0], str(exc))]
    middle = len(rows) // 2
    changed_left, refused_left = await send_or_set_aside(send, rows[:middle])
    changed_right, refused_right = await send_or_set_aside(send, rows[middle:])
    return changed_left + changed_right, refused_left + refused_right


class SetAsideLog:
    """The append-only file of refused rows, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, kind: str, shard: int, refused: Sequence[tuple[object, str]]) -> None:
        """Append the refused rows and fsync, so they are on disk before being acknowledged."""
        if not refused:
            return
        at = format_us(now_us())
        lines = b"".join(
            orjson.dumps(
                {"at": at, "kind": kind, "shard": shard, "error": error, "row": _plain(row)}
            )
            + b"\n"
            for row, error in refused
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


def _plain(row: object) -> object:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    return row
