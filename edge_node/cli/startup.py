"""Start-up failures an operator fixes on the machine, each as one line and a sysexits status.

A read-only or missing directory, a file the service user may not write, a full disk, a port
another process holds, an open-files limit too low or a file a newer release migrated beyond
what this one reads are not bugs: the command prints one
line naming the path or address and what to do, and exits with the status docs/operations.md
lists, never a traceback.
"""

from __future__ import annotations

import errno
import sqlite3

from edge_node.descriptors import DescriptorLimitTooLow
from edge_node.errors import SchemaTooNew
from edge_node.sqlite import storage_failure

EXIT_OSERR = 71  # EX_OSERR: the address is taken, too few file descriptors
EXIT_CANTCREAT = 73  # EX_CANTCREAT: a directory or file that cannot be created or written
EXIT_IOERR = 74  # EX_IOERR: the disk is full or failing
EXIT_NOPERM = 77  # EX_NOPERM: the service user may not use a path
EXIT_DATAERR = 65  # EX_DATAERR: a file a newer release migrated that this one cannot read

_BY_ERRNO = {
    errno.EACCES: (EXIT_NOPERM, "give the service user access to it, or choose another path"),
    errno.EPERM: (EXIT_NOPERM, "give the service user access to it, or choose another path"),
    errno.EROFS: (EXIT_CANTCREAT, "the filesystem is read-only: remount it read-write"),
    errno.ENOENT: (EXIT_CANTCREAT, "create it, or choose another path (--data-dir)"),
    errno.ENOTDIR: (EXIT_CANTCREAT, "a file stands where a directory is needed"),
    errno.ENOSPC: (EXIT_IOERR, "the disk is full: free space on it"),
    errno.EDQUOT: (EXIT_IOERR, "the disk quota is used up: free space or raise it"),
    errno.EIO: (EXIT_IOERR, "the disk is failing: check dmesg"),
    errno.EADDRINUSE: (
        EXIT_OSERR,
        "another process listens there: stop it, or choose another server.port (--port)",
    ),
    errno.EADDRNOTAVAIL: (EXIT_OSERR, "no interface has that address: fix server.host"),
    errno.EMFILE: (EXIT_OSERR, "raise LimitNOFILE= in the systemd unit or `ulimit -n`"),
}


def describe_failure(exc: BaseException, data_dir: str) -> tuple[str, int] | None:
    """The one line and exit status for a start-up failure of the machine's making, or None
    for anything else."""
    if isinstance(exc, DescriptorLimitTooLow):
        return f"edge-node: {exc}", EXIT_OSERR
    if isinstance(exc, SchemaTooNew):
        return f"edge-node: {exc}", EXIT_DATAERR
    if isinstance(exc, OSError) and exc.errno in _BY_ERRNO:
        status, advice = _BY_ERRNO[exc.errno]
        where = f"{exc.filename}: " if exc.filename else ""
        return f"edge-node: {where}{exc.strerror or exc}; {advice}", status
    if isinstance(exc, sqlite3.Error):
        fault = storage_failure(exc)
        if fault is not None:
            what, damaged = fault
            advice = (
                "restore the file from a backup (docs/operations.md)"
                if damaged
                else "check that the directory exists, is writable by the service user and "
                "its disk has room"
            )
            return f"edge-node: a database under {data_dir}: {what} ({exc}); {advice}", (
                EXIT_IOERR if damaged else EXIT_CANTCREAT
            )
    return None
