"""docs/metrics.md, the Grafana dashboard, the alert rules and the runbook match the metrics the
node really exposes, so none of them can drift from the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from edge_node.cli.upgrade_record import UpgradeCollector
from edge_node.metrics.leases import LeaseCollector
from edge_node.metrics.node import NodeMetrics
from edge_node.queue import open_queue
from edge_node.tenants.registry import TenantRegistry
from edge_node.tenants.webhooks import WebhookStats
from edge_node.usage.leases import LeaseBook
from edge_node.usage.meter import MeterStats
from sync.billing.send import BillingStats
from sync.jobs import JobStatus
from sync.status import ShardStatus
from tests.metrics.test_sources import WorkerStatus

ROOT = Path(__file__).parent.parent.parent
METRICS_DOC = ROOT / "docs" / "metrics.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "config" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "config" / "grafana-dashboard.json"
ROW = re.compile(r"^\| `(?P<name>[a-z_:]+)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|", re.M)
# Labels Prometheus adds to every series it scrapes, and the bucket bound of histograms.
TARGET_LABELS = {"job", "instance"}
SERIES_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


async def fed_metrics(tmp_path: Path, *, tenant_label: bool) -> NodeMetrics:
    """A NodeMetrics with every source attached and something in each: every family has a
    sample, so its labels can be read."""
    metrics = NodeMetrics(CollectorRegistry(), tenant_label=tenant_label)
    queue = await open_queue(tmp_path / f"queue-{tenant_label}", consumers=("billing",))
    metrics.watch_queue(queue)
    metrics.watch_meter(MeterStats())
    shard = ShardStatus(0, "postgresql://edge@db/central", standby_lag_seconds=0.0)
    metrics.watch_sync(WorkerStatus([shard], [JobStatus("stripe-usage-flush")]))
    metrics.watch_billing(BillingStats())
    metrics.watch_webhooks(WebhookStats())
    registry = TenantRegistry.open(tmp_path / f"node-{tenant_label}")
    metrics.watch_tenants(registry)
    metrics.registry.register(UpgradeCollector(tmp_path))  # as each worker does (daemon.py)
    leases = LeaseBook(tmp_path / f"leases-{tenant_label}")  # a node with a central database
    metrics.registry.register(LeaseCollector(leases))
    await metrics.refresh()
    registry.close()
    await queue.close()
    metrics.observe("GET", "/healthz", 429, 0.001, "t")
    metrics.fsync_duration.observe(0.001)
    shard.last_success_at = 1
    return metrics


def exposed_families(metrics: NodeMetrics) -> dict[str, str]:
    """{name: type} from the exposition's TYPE lines, without prometheus_client's _created."""
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics.render().decode(), flags=re.M))
    return {
        name: kind
        for name, kind in families.items()
        if not (name.endswith("_created") and kind == "gauge")
    }


def exposed_labels(metrics: NodeMetrics) -> dict[str, set[str]]:
    """{family name as documented: label names of its samples}, `le` left out."""
    labels: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                labels.setdefault(name, set()).update(set(sample.labels) - {"le"})
    return labels


def documented() -> dict[str, tuple[str, set[str], set[str]]]:
    """{name: (type, labels always there, labels only when opted in)} from the table."""
    rows = {}
    for match in ROW.finditer(METRICS_DOC.read_text()):
        parts = [p.strip() for p in match["labels"].split(",") if p.strip()]
        always = {p for p in parts if not p.startswith("[")}
        optional = {p.strip("[]") for p in parts if p.startswith("[")}
        rows[match["name"]] = (match["type"], always, optional)
    return rows


def series_names(families: dict[str, str]) -> set[str]:
    """Every series name a query may use: histograms' _bucket/_count/_sum, and `up`."""
    names = {"up"}
    for name, kind in families.items():
        names.update(name + suffix for suffix in SERIES_SUFFIXES[kind])
    return names


def dashboard_queries() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return walk(json.loads(DASHBOARD.read_text()))


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def referenced(query: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for each metric a PromQL query selects."""
    selectors = re.finditer(r"\b(edge_node_\w+|process_\w+|up)\b(?:\{([^}]*)\})?(?!\s*\()", query)
    return [(m[1], set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m[2] or ""))) for m in selectors]


class TestMetricsTable:
    async def test_the_table_lists_exactly_the_metrics_exposed_with_their_types(
        self, tmp_path: Path
    ) -> None:
        """Every metric the node exposes has a row with its type, and every row is exposed."""
        metrics = await fed_metrics(tmp_path, tenant_label=False)
        exposed = exposed_families(metrics)
        table = {name: row[0] for name, row in documented().items()}
        assert table == exposed

    @pytest.mark.parametrize("tenant_label", [False, True], ids=["default", "tenant-label"])
    async def test_the_table_names_each_metrics_labels(
        self, tmp_path: Path, tenant_label: bool
    ) -> None:
        """The labels column is what the samples carry; bracketed labels only with the
        operator's opt-in (metrics.tenant_label)."""
        labels = exposed_labels(await fed_metrics(tmp_path, tenant_label=tenant_label))
        for name, (_, always, optional) in documented().items():
            expected = always | (optional if tenant_label else set())
            assert labels.get(name, set()) == expected, name


class TestDashboardAndAlerts:
    async def test_every_query_selects_only_metrics_and_labels_that_exist(
        self, tmp_path: Path
    ) -> None:
        """Each dashboard query and alert expression selects at least one metric; each
        metric exists (as exposed, or `up`), and each label it matches on is one it has."""
        metrics = await fed_metrics(tmp_path, tenant_label=False)
        names = series_names(exposed_families(metrics))
        labels = exposed_labels(metrics)
        queries = [*dashboard_queries(), *(rule["expr"] for rule in alert_rules())]
        assert len(queries) > 20
        for query in queries:
            selected = referenced(query)
            assert selected, query
            for name, matched in selected:
                assert name in names, f"{name} in {query}"
                family = re.sub(r"_(bucket|count|sum)$", "", name)
                allowed = labels.get(family, set()) | TARGET_LABELS
                assert matched <= allowed, f"{name} has no label {matched - allowed}"

    def test_the_alerts_cover_queue_age_sync_lag_set_aside_errors_and_scrapes(self) -> None:
        """There is an alert on each of the issues an SRE must hear about."""
        expressions = " ".join(rule["expr"] for rule in alert_rules())
        for metric in (
            "edge_node_queue_oldest_unconsumed_age_seconds",
            "edge_node_sync_lag_seconds",
            "edge_node_sync_standby_lag_seconds",
            "edge_node_billing_batches_set_aside_total",
            'edge_node_http_requests_total{status=~"5.."}',
            "edge_node_billing_stripe_failures_total",
            'up{job="edge-node"}',
        ):
            assert metric in expressions, metric

    async def test_promtool_accepts_the_rules_and_the_exposition(self, tmp_path: Path) -> None:
        """`promtool check rules` passes on config/prometheus-alerts.yml and `promtool check
        metrics` finds nothing to lint in the node's exposition. `make test` puts promtool
        in the virtualenv (scripts/ensure-promtool.sh); skipped only where it could not."""
        beside = Path(sys.executable).with_name("promtool")
        promtool = str(beside) if beside.exists() else shutil.which("promtool")
        if promtool is None:
            missing = "promtool is not installed (scripts/ensure-promtool.sh fetches it)"
            if os.environ.get("REQUIRE_PROMTOOL") == "1":
                pytest.fail(missing)
            pytest.skip(missing)
        exposition = (await fed_metrics(tmp_path, tenant_label=True)).render()
        for arguments, given in ((["rules", str(ALERTS)], None), (["metrics"], exposition)):
            done = subprocess.run(
                [promtool, "check", *arguments],
                input=given,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, (done.stdout + done.stderr).decode()


class TestRunbook:
    def test_every_alert_has_a_runbook_entry_and_every_entry_an_alert(self) -> None:
        """docs/operations.md's "Alert runbook" has one entry per alert, each saying what it
        means, what to check and what to do, and each alert's runbook link points at it."""
        text = OPERATIONS_DOC.read_text()
        section = text.split("## Alert runbook", 1)[1]
        section = re.split(r"^## ", section, flags=re.M)[0]
        entries = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", section, flags=re.M | re.S))
        rules = alert_rules()
        assert set(entries) == {rule["alert"] for rule in rules}
        for name, body in entries.items():
            for part in ("**Means**", "**Check**", "**Do**"):
                assert part in body, f"{name} lacks {part}"
        for rule in rules:
            assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
