"""Copying a queue directory while the process that owns it keeps appending and trimming.

The owner appends to its newest segment, rolls over to new ones, and deletes segments once
every cursor has passed them. A copy made from outside, without the lock, must therefore:

1. `pin_segments()`: hard-link every segment into a holding directory on the same file
   system. A link is taken in an instant, and a segment the owner deletes afterwards keeps
   its bytes under the link, so no record that a cursor read later still needs can vanish
   mid-copy. Appends made after the link still land in it (same inode).
2. `capture_cursors()`: read the cursors after the pin. Every segment deleted before the pin
   was behind every cursor then, and cursors only move forward: the copy has no hole between
   its cursors and its first record.
3. `pin_segments()` again after whatever must be copied in between (the databases that
   refer to queue positions), to take segments the owner rolled over to meanwhile.
4. `write_to()`: copy the pinned segments' bytes and write the cursors; a record the owner
   was writing during the copy may be torn at the end, which recovery truncates on open.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from edge_node.queue.cursors import CURSOR_SUFFIX, format_cursor, read_cursor_files
from edge_node.queue.segments import list_segment_files

_NO_HARD_LINKS = (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


class QueueCopy:
    """One queue directory being copied; `holding` is an empty directory on its file system."""

    def __init__(self, directory: Path, holding: Path) -> None:
        self.directory = directory
        self.holding = holding
        self.cursors: dict[str, int] = {}
        holding.mkdir(parents=True, exist_ok=False)

    def pin_segments(self) -> int:
        """Hard-link the segments not pinned yet (copied at once where links are refused)."""
        pinned = 0
        for _, path in list_segment_files(self.directory):
            held = self.holding / path.name
            if held.exists():
                continue
            try:
                os.link(path, held)
            except FileNotFoundError:
                continue  # deleted by its owner just now: behind every cursor
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                try:
                    shutil.copyfile(path, held)
                except FileNotFoundError:
                    continue
            pinned += 1
        return pinned

    def capture_cursors(self) -> dict[str, int]:
        """Every consumer's cursor as it is now (checksums verified)."""
        self.cursors = read_cursor_files(self.directory)
        return self.cursors

    def write_to(self, target: Path) -> list[Path]:
        """Write the copy into `target` (created, must not exist); the files written (not yet
        fsynced: the caller syncs the whole copy once)."""
        target.mkdir(parents=True)
        written = []
        for held in sorted(self.holding.iterdir()):
            shutil.copyfile(held, target / held.name)
            written.append(target / held.name)
        for consumer, seq in sorted(self.cursors.items()):
            path = target / f"{consumer}{CURSOR_SUFFIX}"
            path.write_bytes(format_cursor(consumer, seq))
            written.append(path)
        return written

    def release(self) -> None:
        """Drop the holding directory and its links."""
        shutil.rmtree(self.holding, ignore_errors=True)
