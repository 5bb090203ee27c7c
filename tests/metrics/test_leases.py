"""The lease metrics (edge_node/metrics/leases.py) read back from a fresh registry: the
overshoot bound and the leases per state, from the leases file at each scrape."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from edge_node import clock
from edge_node.metrics.leases import LeaseCollector
from edge_node.usage.leases import Lease, LeaseBook, boot_id, boottime_ns, open_leases, write_leases
from edge_node.usage.quotas import calendar_month


def lease(tenant_id: str, granted: int, node_spent: int, **changes: object) -> Lease:
    """A live lease of this boot for the current period, nothing past it once cut off."""
    start = calendar_month(clock.now_ms())[0]
    live_until = boottime_ns() + 60 * 10**9
    held = Lease(
        tenant_id, start, 100, granted, node_spent, 0, False, live_until, boot_id(), False, 0
    )
    return held._replace(**changes)  # type: ignore[arg-type]


class TestLeaseMetrics:
    def test_the_bound_and_the_states_follow_the_leases_file(self, tmp_path: Path) -> None:
        """Units held unreported plus partition units, summed over this period's leases; one
        live, one cut off, one lapsed, and last month's counted nowhere."""
        book = LeaseBook(tmp_path, refresh_seconds=0)
        registry = CollectorRegistry()
        registry.register(LeaseCollector(book))
        conn = open_leases(tmp_path)
        try:
            assert registry.get_sample_value("edge_node_quota_overshoot_bound_units") == 0
            write_leases(
                conn,
                [
                    lease("a", 10, 4),  # 6
                    lease("b", 10, 10, cut_off=True, partition_units=5),  # 0 + 5
                    lease("c", 3, 1, valid_until_ns=boottime_ns()),  # 2, lapsed
                    lease("d", 50, 0, period_start_ms=0),  # another period
                ],
            )
            assert registry.get_sample_value("edge_node_quota_overshoot_bound_units") == 13
            states = {
                state: registry.get_sample_value("edge_node_quota_leases", {"state": state})
                for state in ("live", "cut_off", "lapsed")
            }
            assert states == {"live": 1, "cut_off": 1, "lapsed": 1}
        finally:
            conn.close()
            book.close()
