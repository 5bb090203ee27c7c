"""The PostgreSQL adapter: the one module importing asyncpg; it connects and maps errors to ours.

Every call into asyncpg that can fail runs under `translated()`, which turns driver and
network errors into the project's tree (edge_node.errors):

- PermanentSyncError when the server refused the data itself: SQLSTATE class 22 (data
  exception: bad value, out of range), 23 (integrity constraint violation) or 54 (program
  limit exceeded); asyncpg reports a query argument it cannot encode as 22000 too. Retrying
  the same batch fails the same way, so the sync worker sets it aside and reports it.
- TransientSyncError for everything else: refused, reset or dropped connections, timeouts,
  DNS failures, serialization failures and deadlocks (40xxx), too many connections and other
  resource shortages (53xxx), a server starting or shutting down (57Pxx), but also a wrong
  password, a missing privilege or a schema not migrated yet. None of those is the data's
  fault: retrying later loses nothing, and an operator's fix makes the next retry succeed,
  whereas setting good data aside because of a configuration mistake would lose it.
- ConfigError for a DSN that cannot be a PostgreSQL URL.

DSNs are never printed with their password: messages use `redact_dsn`.

Every session we open commits durably: on a server configured with `synchronous_commit = off`
a COMMIT is acknowledged before it would survive a crash, and the sync worker forgets its
outbox entries on that acknowledgement, so `connect` raises the setting back to `on` for its
own session (stronger settings, `remote_write` or `remote_apply`, are left alone).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from edge_node.errors import ConfigError, PermanentSyncError, SyncError, TransientSyncError

if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Connection = asyncpg.Connection
    Pool = asyncpg.Pool
Record: TypeAlias = asyncpg.Record  # one row a query returned, read by column name

APPLICATION_NAME = "edge-node"
CONNECT_TIMEOUT_SECONDS = 10.0
DSN_SCHEMES = ("postgresql", "postgres")
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# Failures of one statement over the rows it touched, not of the connection or the schema:
# lock_not_available (lock_timeout), deadlock_detected, serialization_failure.
ROW_CONFLICT_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
_DURABLE_COMMITS = """
    SELECT set_config('synchronous_commit', 'on', false)
    WHERE current_setting('synchronous_commit') = 'off'"""


def check_dsn(dsn: str) -> None:
    """Raise ConfigError unless `dsn` is a postgresql:// URL (the only form asyncpg takes)."""
    scheme = dsn.partition("://")[0] if "://" in dsn else ""
    try:
        _ = urllib.parse.urlsplit(dsn).port  # raises ValueError for a port out of range
    except ValueError:
        scheme = ""
    if scheme not in DSN_SCHEMES:
        raise ConfigError(
            f"a central DSN must be a postgresql://user@host:port/database URL, got "
            f"{redact_dsn(dsn)}"
        )


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by `***`; text that is not a URL is not shown."""
    if "://" not in dsn:
        return "(a DSN that is not a URL, not shown)"
    try:
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is None and "password" not in parts.query:
            return dsn
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}" if userinfo else hostinfo
        query = urllib.parse.urlencode(
            [
                (key, "***" if key == "password" else value)
                for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "(a DSN that is not a valid URL, not shown)"


def classify(exc: BaseException, context: str = "") -> SyncError | ConfigError | None:
    """Our exception for a driver or network error; None for anything else."""
    prefix = f"{context}: " if context else ""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        permanent = sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES
        kind = PermanentSyncError if permanent else TransientSyncError
        return kind(f"{prefix}{exc} (SQLSTATE {sqlstate or 'unknown'})")
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return ConfigError(f"{prefix}{exc}")
    if isinstance(exc, TimeoutError):
        return TransientSyncError(f"{prefix}timed out")
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError | OSError):
        return TransientSyncError(f"{prefix}{exc.__class__.__name__}: {exc}")
    return None


def refused_for_its_rows(exc: BaseException) -> bool:
    """Whether `exc` (one of ours) is the server refusing one statement for the rows it
    touched (locked past lock_timeout, a deadlock, a serialization failure), which another
    statement on other rows would not meet."""
    cause = exc.__cause__
    return (
        isinstance(cause, asyncpg.PostgresError)
        and str(getattr(cause, "sqlstate", "")) in ROW_CONFLICT_SQLSTATES
    )


def as_columns(rows: Sequence[object], names: Sequence[str]) -> list[list[Any]]:
    """The attributes `names` of `rows`, one list per name: the arrays `unnest()` turns back
    into rows, so that a batch is one statement."""
    return [[getattr(row, name) for row in rows] for name in names]


def rows_changed(status: str) -> int:
    """How many rows a command changed, from its status (`INSERT 0 3`, `UPDATE 2`)."""
    return int(status.rsplit(" ", 1)[-1])


@contextlib.contextmanager
def translated(context: str = "") -> Iterator[None]:
    """Run a block of asyncpg calls, raising our exceptions in place of the driver's."""
    try:
        yield
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        mapped = classify(exc, context)
        if mapped is None:  # pragma: no cover - every caught class is classified
            raise
        raise mapped from exc


async def connect(
    dsn: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    command_timeout: float | None = None,
    lock_timeout: float | None = None,
) -> Connection:
    """One connection to the server at `dsn`, committing durably (see the module doc);
    `command_timeout` bounds every statement (a statement past it is cancelled and raises
    TransientSyncError); `lock_timeout` bounds each wait for a row lock (SQLSTATE 55P03)."""
    check_dsn(dsn)
    settings = {"application_name": APPLICATION_NAME}
    if lock_timeout is not None:
        settings["lock_timeout"] = f"{max(1, round(lock_timeout * 1000))}ms"
    with translated(f"cannot connect to {redact_dsn(dsn)}"):
        connection: Connection = await asyncpg.connect(
            dsn,
            timeout=connect_timeout,
            command_timeout=command_timeout,
            server_settings=settings,
        )
        try:
            await connection.execute(_DURABLE_COMMITS)
        except BaseException:
            connection.terminate()
            raise
    return connection


async def close_quietly(connection: Connection, wait_seconds: float = 2.0) -> None:
    """Close a connection that may already be broken; a close that fails just aborts it."""
    try:
        await connection.close(timeout=wait_seconds)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        connection.terminate()


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> Pool:
    """A connection pool to the server at `dsn`, its first connections already open."""
    check_dsn(dsn)
    with translated(f"cannot connect to {redact_dsn(dsn)}"):
        pool: Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            server_settings={"application_name": APPLICATION_NAME},
        )
    return pool


async def server_version_num(connection: Connection) -> int:
    """The server's version as PostgreSQL's integer, e.g. 150004 for 15.4."""
    with translated("cannot read the server version"):
        value = await connection.fetchval("SELECT current_setting('server_version_num')::int")
    return int(value)


async def on_each_database(
    dsns: Sequence[str], run: Callable[[Connection], Awaitable[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """`run` on one connection to each database in turn (an operator command over every
    shard): its reports, each with the database's redacted DSN; a failure names the DSN."""
    reports = []
    for dsn in dsns:
        connection = await connect(dsn)
        try:
            report = await run(connection)
        except SyncError as exc:
            raise type(exc)(f"{redact_dsn(dsn)}: {exc}") from exc
        finally:
            with translated():
                await connection.close()
        reports.append({"dsn": redact_dsn(dsn), **report})
    return reports
