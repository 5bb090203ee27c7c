"""File descriptors: the open-files limit raised at start, and the share of it tenant files get.

Every open tenant file costs three descriptors (the database, its `-wal` and its `-shm`), and
a background checkpoint opens the same three again for a moment. Beside them the process
needs descriptors for its client connections, the listening sockets, node.sqlite, the key
store, the usage queue, the served-counts file and log output. The node therefore raises its
soft limit to the hard limit at start (what systemd's `LimitNOFILE=` or `ulimit -Hn` allow),
and keeps at most half of what remains after a fixed reserve for tenant files: the
tenant-file cache evicts the least recently used file beyond that, rather than leaving
nothing for the next connection.
"""

from __future__ import annotations

import resource

FILES_PER_TENANT = 3  # the database, -wal, -shm
RESERVED = 64  # node.sqlite, key store, queue, served counts, sockets, logs, a checkpoint
# Below this the node cannot hold a handful of tenants and connections: it refuses to start.
MINIMUM_LIMIT = 128
# Where the hard limit is unlimited, the soft limit goes no higher than this.
CEILING = 1 << 20


class DescriptorLimitTooLow(Exception):
    """The open-files limit leaves too few descriptors to serve; the message names the fix."""


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container may forbid it: keep the soft limit and size to it
    if soft != resource.RLIM_INFINITY and soft < MINIMUM_LIMIT:
        raise DescriptorLimitTooLow(
            f"the open-files limit is {soft} (soft and hard); edge-node needs at least "
            f"{MINIMUM_LIMIT}: raise LimitNOFILE= in the systemd unit or `ulimit -n`"
        )
    return CEILING if soft == resource.RLIM_INFINITY else soft


def open_files_limit() -> int:
    """The soft open-files limit in force."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return CEILING if soft == resource.RLIM_INFINITY else soft


def tenant_files_budget(limit: int) -> int:
    """How many tenant files may be open at once under an open-files limit of `limit`."""
    return max(1, (limit - RESERVED) // 2 // FILES_PER_TENANT)
