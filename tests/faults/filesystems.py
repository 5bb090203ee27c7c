"""Small real filesystems for fault tests: a tmpfs of a given size mounted by the test (root
only), so that a disk really fills up under the daemon."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def require_root() -> None:
    """Skip, saying why, where the fault cannot be made: mounting needs root."""
    if os.geteuid() != 0:
        reason = "mounting a small tmpfs to fill needs root; run the fault tests as root"
        print(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `mountpoint` for the duration; unmounted after."""
    require_root()
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path, chunk_bytes: int = 256 * 1024) -> int:
    """Write `path` until the filesystem is full; return the bytes it holds."""
    written = 0
    block = b"\xa5" * chunk_bytes
    with path.open("ab", buffering=0) as ballast:
        while chunk_bytes >= 512:
            try:
                written += ballast.write(block[:chunk_bytes])
            except OSError:
                chunk_bytes //= 2
    return written
