"""Opening SQLite files the way every edge-node database needs them, and migrating their schema.

Connections run in autocommit mode (`isolation_level=None`) so each store states its own
transactions with `BEGIN IMMEDIATE`; WAL lets readers proceed while one writer commits.
Schema versions live in `PRAGMA user_version`: migration N brings a file from N-1 to N. A file
several concepts share (node.sqlite) versions each concept's tables apart instead: the
component's row in `schema_versions`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from edge_node.errors import SchemaTooNew

Synchronous = Literal["normal", "full"]

# SQLite's primary result codes (the low byte of an extended code) that say the storage, not
# the statement, failed: the disk is full, I/O failed, the file is read-only, cannot be
# opened, or is damaged.
_STORAGE_CODES = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "a disk I/O error",
    sqlite3.SQLITE_READONLY: "the file is read-only",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_CORRUPT: "the file is damaged",
    sqlite3.SQLITE_NOTADB: "the file is damaged",
    # Another process held the file's lock past the busy timeout (a backup, a long command).
    sqlite3.SQLITE_BUSY: "the file is locked by another process",
    sqlite3.SQLITE_LOCKED: "the file is locked",
}
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# OS errors that mean the same for files written directly.
_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "a disk I/O error",
    errno.EMFILE: "the process has no file descriptor left",
    errno.ENFILE: "the system has no file descriptor left",
}


def storage_failure(exc: BaseException) -> tuple[str, bool] | None:
    """What failed in storage when `exc` is a storage fault rather than a bug, and whether the
    file is damaged (as opposed to a full, read-only or failing disk); None otherwise."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _STORAGE_CODES:
            return _STORAGE_CODES[code & 0xFF], code & 0xFF in _DAMAGE_CODES
        return None
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return _STORAGE_ERRNOS[exc.errno], False
    return None


def connect(
    path: Path, *, synchronous: Synchronous = "normal", busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Open (creating if needed) a database file in WAL mode with foreign keys enforced."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    try:
        _enable_wal(conn, busy_timeout_ms)
    except BaseException:
        conn.close()
        raise
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch a file to WAL. On a new file opened by several processes at once (the workers
    of `serve --workers N`), the switch can answer "database is locked" at once, without
    waiting on the busy timeout: try again until that timeout has passed."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _connect_existing(path: Path) -> sqlite3.Connection:
    """A connection to a file that must exist already: a file removed meanwhile (a tenant
    deleted while its checkpoint was on the way) is an error, never made again empty."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None)


def checkpoint(path: Path, busy_timeout_ms: int = 5000) -> tuple[bool, int, int]:
    """Copy a WAL file's committed frames into the database (PASSIVE: never blocks writers):
    whether another connection's checkpoint kept this one from running, the frames the WAL
    held and how many of them are now copied.

    Meant for a background thread, on its own short-lived connection, so the fsyncs of a
    checkpoint never run on the event loop's connection.
    """
    conn = _connect_existing(path)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return bool(busy), int(frames), int(copied)
    finally:
        conn.close()


def cut_wal(path: Path, limit_bytes: int) -> bool:
    """Give back the disk space of a WAL file grown past `limit_bytes` (a WAL file keeps the
    size it grew to until a write restarts it): a TRUNCATE checkpoint that does not wait, so
    it happens only while no reader or writer is in the WAL. False when the file is still over
    the limit. For a background thread, like `checkpoint`."""
    if wal_bytes(path) <= limit_bytes:
        return True
    conn = _connect_existing(path)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()
    return not busy and wal_bytes(path) <= limit_bytes


def wal_bytes(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's SQLITE_BUSY: another connection holds the lock asked for."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


@contextmanager
def transaction(conn: sqlite3.Connection, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock up front, so it never fails half-way on it.

    Inside another transaction it is a savepoint instead: its work is undone alone if it
    fails, and becomes durable with the enclosing transaction's commit (group commit).

    While another connection holds the write lock, SQLite's busy handler retries for up to
    the connection's busy timeout, sleeping on the calling thread. `wait=False` asks for the
    lock once instead: SQLITE_BUSY (`is_busy`) at once when it is taken, for a caller on the
    event loop, whose every request that sleep would stop (edge_node.write_batches
    asks again later without blocking).
    """
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # a full disk can make SQLite roll back everything
                conn.execute("ROLLBACK TO nested")
                conn.execute("RELEASE nested")
            raise
        conn.execute("RELEASE nested")
        return
    if wait:
        conn.execute("BEGIN IMMEDIATE")
    else:
        _begin_at_once(conn)
    try:
        yield conn
    except BaseException:
        _roll_back(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        _roll_back(conn)
        raise


def _begin_at_once(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE without the busy handler: the busy timeout is 0 for that statement."""
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def _roll_back(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, unless SQLite already did (it rolls back by itself after a
    full disk or an I/O error, and a second ROLLBACK would hide that error)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[str],
    *,
    component: str | None = None,
    min_reader: int = 0,
) -> int:
    """Apply the migrations this file (or, with `component`, that component of it) has not
    seen yet, each in its own transaction.

    The version is read again once the write lock is held: another process opening the same
    new file at the same moment (the daemon and an `edge-node` command) may have applied the
    migration while this one waited for the lock.

    Migrations are additive, so a release that knows fewer of them still reads the file (the
    previous release keeps serving during an upgrade). Should a release ever ship one that
    older releases cannot read, it states `min_reader`, the fewest migrations of this
    component a release must know to use the file; it is recorded in the file
    (`schema_readers`), and a release knowing fewer refuses the file with SchemaTooNew
    instead of misreading it.
    """
    _check_readable(conn, component, len(migrations))
    current = schema_version(conn, component)
    for version, script in enumerate(migrations, start=1):
        if version <= current:
            continue
        with transaction(conn):
            current = schema_version(conn, component)
            if version <= current:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            _set_schema_version(conn, component, version)
    if min_reader > _reader_floor(conn, component):
        with transaction(conn):
            conn.execute(_SCHEMA_READERS)
            conn.execute(
                "INSERT INTO schema_readers (component, min_reader) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET min_reader = excluded.min_reader",
                (component or _WHOLE_FILE, min_reader),
            )
    return len(migrations)


# A file versioned by user_version as a whole is the component of this name in schema_readers.
_WHOLE_FILE = ""
_SCHEMA_READERS = """CREATE TABLE IF NOT EXISTS schema_readers (
    component TEXT PRIMARY KEY,
    min_reader INTEGER NOT NULL
) WITHOUT ROWID"""


def _reader_floor(conn: sqlite3.Connection, component: str | None) -> int:
    """How many of the component's migrations a release must know to use this file."""
    if not has_table(conn, "schema_readers"):
        return 0
    row = conn.execute(
        "SELECT min_reader FROM schema_readers WHERE component = ?", (component or _WHOLE_FILE,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _check_readable(conn: sqlite3.Connection, component: str | None, known: int) -> None:
    floor = _reader_floor(conn, component)
    if floor > known:
        (path,) = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
        raise SchemaTooNew(path, component, known, floor)


def schema_version(conn: sqlite3.Connection, component: str | None = None) -> int:
    """The file's schema version, or that of one component of it (0: none of its tables)."""
    if component is None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)
    if not has_table(conn, "schema_versions"):
        return 0
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _set_schema_version(conn: sqlite3.Connection, component: str | None, version: int) -> None:
    if component is None:
        conn.execute(f"PRAGMA user_version = {int(version)}")
        return
    conn.execute(_SCHEMA_VERSIONS)
    conn.execute(
        "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
        " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        (component, version),
    )


_SCHEMA_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0)
) WITHOUT ROWID"""


def set_component_versions(conn: sqlite3.Connection, versions: dict[str, int]) -> None:
    """Record component versions in the caller's transaction (a file adopting components)."""
    for component, version in versions.items():
        if version > 0:
            _set_schema_version(conn, component, version)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the file has the table: a component that never ran has not created its own."""
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        is not None
    )


def _statements(script: str) -> Iterator[str]:
    # executescript() would commit our transaction, so split the script ourselves; SQLite's
    # own complete_statement() knows where a statement (trigger bodies included) ends.
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")


@contextmanager
def read_only(path: Path, *, busy_timeout_ms: int = 5000) -> Iterator[sqlite3.Connection]:
    """A read-only connection for the operator commands (status, backup), closed afterwards.

    Reading a WAL database creates its -wal and -shm files when they are missing; run as
    root, SQLite gives them to the database file's owner, so the service can still open them.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        yield conn
    finally:
        conn.close()
