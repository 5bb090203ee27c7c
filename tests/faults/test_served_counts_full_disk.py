"""The served-counts file on a full filesystem: its growth is refused with an error, never
a SIGBUS that kills the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.faults.filesystems import small_tmpfs

# Fills the filesystem, then asks the counter for more slots than its file holds, as the meter
# does before a request, and counts tenant-days into new slots the way requests would.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edge_node.usage.served import INITIAL_SLOTS, ServedCounter
    from tests.faults.filesystems import fill

    root = Path(sys.argv[1])
    counter = ServedCounter(root / "served" / "worker-0.counts")
    fill(root / "ballast")
    try:
        counter.ensure_room(INITIAL_SLOTS + 1)
    except OSError as exc:
        print("growth refused:", exc.strerror, flush=True)
    for day in range(4 * INITIAL_SLOTS):
        try:
            counter.add("8e0c2a4e-0000-4000-8000-000000000001", day * 86_400_000, 1)
        except OSError as exc:
            print("count refused at day", day, exc.strerror, flush=True)
            break
    counter.close()
    print("alive", flush=True)
    """
)


class TestServedCountsOnAFullDisk:
    def test_growth_on_a_full_filesystem_is_an_error_not_a_signal(self, tmp_path: Path) -> None:
        """With the filesystem full, making room for more (tenant, day) slots raises ENOSPC,
        and so does counting into slots the file does not hold: the process lives on."""
        with small_tmpfs(tmp_path / "mnt", 4 << 20) as root:
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, str(root)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=Path(__file__).resolve().parents[2],
            )
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        assert "growth refused: No space left on device" in done.stdout
        assert "count refused at day 1024 No space left on device" in done.stdout
        assert done.stdout.rstrip().endswith("alive")
