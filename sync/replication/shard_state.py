"""A shard's download state on this node, as named values in node.sqlite: the shard-wide
ratings checkpoint, which tenants it covers, and the checkpoint generation that
`edge-node sync reset-checkpoints` moves on.

Ratings come down shard-wide (sync/replication/rating_transfer.py): one checkpoint per shard, one
query for every tenant's changes. A tenant is *joined* once it is known to have every row below
that checkpoint: its rows then come with the shard's. A tenant that is not (one this node
learned after the shard checkpoint passed its rows, or one whose rows failed to apply) first
catches up on its own, from its own checkpoint in its tenant file, and joins once it is level.

Every position (positions.py) names the database it belongs to; here that name also carries
the generation: `<identity>` at generation 0, `<identity>#reset-<n>` after n resets. Moving
the generation on thus invalidates every checkpoint of the shard at once (registry, shard,
each tenant's) without touching a tenant file, and a round already running when it moves
writes checkpoints under the old name, which the next round ignores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import orjson

from edge_node import sqlite
from edge_node.errors import ConfigError
from edge_node.node_database import read_value, write_value


def _generation_key(shard: int) -> str:
    return f"checkpoints.generation.shard-{shard}"


def _checkpoint_key(shard: int) -> str:
    return f"ratings.shard-{shard}"


def _joined_key(shard: int) -> str:
    return f"ratings.joined.shard-{shard}"


def _read(conn: sqlite3.Connection, name: str) -> str | None:
    return read_value(conn, name)


def _write(conn: sqlite3.Connection, name: str, value: str) -> None:
    with sqlite.transaction(conn):
        write_value(conn, name, value)


def checkpoint_database(conn: sqlite3.Connection, shard: int, identity: str) -> str:
    """The name this node's checkpoints of `shard` give its central database `identity`."""
    generation = int(_read(conn, _generation_key(shard)) or 0)
    return identity if generation == 0 else f"{identity}#reset-{generation}"


def reset_checkpoints(conn: sqlite3.Connection, shards: Iterable[int]) -> dict[int, int]:
    """Move the checkpoint generation of each shard on: its next round downloads everything
    again. The new generation of each shard."""
    generations: dict[int, int] = {}
    with sqlite.transaction(conn):
        for shard in shards:
            generations[shard] = int(_read(conn, _generation_key(shard)) or 0) + 1
            _write(conn, _generation_key(shard), str(generations[shard]))
    return generations


def reset_command(
    conn: sqlite3.Connection, shard_count: int, shard: int | None
) -> dict[str, object]:
    """`edge-node sync reset-checkpoints [--shard N]`: what it reset, as JSON for the CLI."""
    if shard_count == 0:
        raise ConfigError("no central PostgreSQL: central.dsns is empty, nothing to reset")
    if shard is not None and not 0 <= shard < shard_count:
        raise ConfigError(f"--shard must be between 0 and {shard_count - 1}, got {shard}")
    shards = range(shard_count) if shard is None else [shard]
    generations = reset_checkpoints(conn, shards)
    return {
        "reset": [{"shard": s, "generation": g} for s, g in generations.items()],
        "effect": "each shard's next sync round downloads every central row again",
    }


def shard_checkpoint(conn: sqlite3.Connection, shard: int) -> str | None:
    return _read(conn, _checkpoint_key(shard))


def set_shard_checkpoint(conn: sqlite3.Connection, shard: int, value: str) -> None:
    _write(conn, _checkpoint_key(shard), value)


def joined_tenants(conn: sqlite3.Connection, shard: int, database: str) -> set[str]:
    """The tenants the shard checkpoint covers, as recorded for `database` (none for another)."""
    text = _read(conn, _joined_key(shard))
    if text is None:
        return set()
    value = orjson.loads(text)
    return set(value["tenants"]) if value.get("db") == database else set()


def set_joined_tenants(
    conn: sqlite3.Connection, shard: int, database: str, tenants: Sequence[str] | set[str]
) -> None:
    _write(
        conn,
        _joined_key(shard),
        orjson.dumps({"db": database, "tenants": sorted(tenants)}).decode(),
    )
