"""The checker, run after every fault schedule once the load has stopped.

It first waits for the cluster to settle (every node serving, queues and outboxes drained,
every replica alike) and records how long that took against a bound; then it holds the
state to what the clients saw (tests/system/record.py):

1. ratings: every acknowledged write is on every edge and in PostgreSQL, identical, unless
   a write that wins the conflict rule replaced it; no row nobody wrote; aggregates match
   the rows on every replica;
2. billing: per tenant, the value billed at the stand-in is exactly the acknowledged
   billable requests (plus the in-doubt ones found on a queue), less what the nodes report
   as set aside (`edge-node billing reconcile`, the ledger), and, identifier by identifier,
   every batch confirmed in a ledger is at the stand-in once with its value and customer,
   none set aside is, and the stand-in holds nothing no ledger planned;
3. isolation: no response carried another tenant's data, no tenant file holds another
   tenant's rows;
4. errors: no 5xx but the documented 503s, every error problem+json, no traceback in any
   daemon log;
5. convergence within the bound, and revoked keys refused by every node afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edge_node.rating.replication import rating_id
from tests.system.cluster import Cluster
from tests.system.record import Check, Observations, WriteOp
from tests.system.snapshot import (
    Batch,
    Replica,
    Row,
    not_converged,
    read_cluster,
    recomputed_scores,
)
from tests.system.traffic import Traffic

MAX_SHOWN = 20


@dataclass
class Verdict:
    schedule: str
    bound: float
    converged_after: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[tuple[Check, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        settle = (
            "did not converge"
            if self.converged_after is None
            else f"converged in {self.converged_after:.1f} s"
        )
        outcome = "OK" if self.ok else "FAILED"
        head = f"[{self.schedule}] {outcome}: {settle} (bound {self.bound:.0f} s)"
        figures = ", ".join(f"{name} {value}" for name, value in self.figures.items())
        shown = [f"  VIOLATION {c}: {m[:2000]}" for c, m in self.violations[:MAX_SHOWN]]
        if len(self.violations) > MAX_SHOWN:
            by_check = Counter(check for check, _ in self.violations)
            shown.append(f"  ... {len(self.violations)} violations in all: {dict(by_check)}")
        return [head, f"  {figures}", *shown]


async def check(
    cluster: Cluster,
    traffic: Traffic,
    schedule: str,
    *,
    faults_stopped_at: float,
    bound: float,
    violations_from: int,
) -> Verdict:
    """The verdict on one schedule: the checks above, and every violation recorded since
    index `violations_from` of the observations (the load's own included)."""
    seen = traffic.seen
    verdict = Verdict(schedule, bound)
    tenant_ids = [t.tenant_id for t in traffic.tenants]
    replicas = await _settle(cluster, tenant_ids, verdict, faults_stopped_at, seen)
    central = replicas[-1]
    check_ratings(central, seen)
    check_replicas(replicas, seen)
    await check_billing(cluster, replicas, seen, tenant_ids, verdict)
    if verdict.converged_after is not None:
        probes = await traffic.probe_revoked_everywhere()
        verdict.figures["revoked keys probed"] = probes
    check_logs(cluster, seen)
    verdict.figures.update(_traffic_figures(seen, central))
    verdict.violations = seen.violations[violations_from:]
    return verdict


async def _settle(
    cluster: Cluster,
    tenant_ids: list[str],
    verdict: Verdict,
    since: float,
    seen: Observations,
) -> list[Replica]:
    while True:
        replicas = await read_cluster(cluster, tenant_ids)
        reasons = not_converged(replicas, cluster)
        waited = time.monotonic() - since
        if not reasons:
            verdict.converged_after = waited
            return replicas
        if waited > verdict.bound:
            seen.violate("convergence", f"not settled after {waited:.0f} s: {reasons[:6]}")
            return replicas
        await asyncio.sleep(0.5)


def check_ratings(central: Replica, seen: Observations) -> None:
    final = {(row[1], row[2], row[3]): row for rows in central.rows.values() for row in rows}
    for key, ops in seen.writes.items():
        _check_key(key, final.pop(key, None), ops, seen)
    for key, row in final.items():
        seen.violate("ratings", f"central holds a rating nobody wrote: {key} {row}")


def _check_key(
    key: tuple[str, str, str], row: Row | None, ops: list[WriteOp], seen: Observations
) -> None:
    acked = [op for op in ops if op.acknowledged]
    if row is None:
        if acked:
            seen.violate("ratings", f"acknowledged {acked[-1].kind} of {key} is nowhere")
        return
    stamp = (row[7], row[8])
    if row[0] != rating_id(*key):
        seen.violate("ratings", f"{key} has id {row[0]}")
    for op in acked:
        if op.kind == "upsert":
            assert op.stamp is not None
            if stamp < op.stamp:
                seen.violate("ratings", f"acknowledged upsert {op} of {key} lost to {row}")
            elif stamp == op.stamp and (row[9] or not _is_write(row, op)):
                seen.violate("ratings", f"acknowledged upsert {op} stored as {row}")
        elif row[7] < op.not_before_us:
            seen.violate("ratings", f"acknowledged delete {op} undone by older write {row}")
    explained = any(
        op.node_id == row[8]
        and ((op.kind == "delete") if row[9] else (op.kind == "upsert" and _is_write(row, op)))
        for op in ops
    )
    if not explained:
        seen.violate("ratings", f"{key} holds {row}, which no request wrote")


def _is_write(row: Row, op: WriteOp) -> bool:
    """The row holds what `op` wrote. A comment sealed at rest (bytes, not text) cannot be
    read here: then the score and the stamp, compared by the caller, identify the write."""
    comment = row[5]
    return row[4] == op.score and (isinstance(comment, bytes) or comment == op.comment)


def check_replicas(replicas: list[Replica], seen: Observations) -> None:
    """Aggregates agree with the rows on every replica; no tenant file holds another's rows."""
    for replica in replicas:
        if replica.foreign_rows:
            seen.violate("isolation", f"{replica.name}: {replica.foreign_rows} foreign rows")
        for tenant_id, rows in replica.rows.items():
            if replica.scores.get(tenant_id, []) != recomputed_scores(rows):
                seen.violate("ratings", f"{replica.name}: item scores of {tenant_id} are off")


async def check_billing(
    cluster: Cluster,
    replicas: list[Replica],
    seen: Observations,
    tenant_ids: list[str],
    verdict: Verdict,
) -> None:
    state = await cluster.standin_state()
    customers: dict[str, list[str]] = {}
    for customer in state["customers"]:
        owner = (customer.get("metadata") or {}).get("tenant_id", "")
        customers.setdefault(owner, []).append(customer["id"])
    set_aside = await _reported_set_aside(cluster, seen)
    edges = replicas[:-1]
    totals: Counter[str] = Counter()
    for tenant_id in tenant_ids:
        if len(customers.get(tenant_id, [])) != 1:
            seen.violate("billing", f"tenant {tenant_id} has customers {customers.get(tenant_id)}")
        billed = sum(state["billed"].get(c, 0) for c in customers.get(tenant_id, []))
        confirmed = sum(e.ledger[tenant_id, "confirmed"] for e in edges)
        aside = sum(e.ledger[tenant_id, "set_aside"] for e in edges)
        metered = sum(e.ledger_events[tenant_id] for e in edges)
        found, unsettled = seen.in_doubt_units(tenant_id)
        expected = seen.acknowledged_units[tenant_id] + found
        if billed != confirmed:
            seen.violate("billing", f"{tenant_id}: stand-in billed {billed}, ledgers {confirmed}")
        if not expected <= metered <= expected + unsettled:
            seen.violate(
                "billing",
                f"{tenant_id}: metered {metered}, acknowledged {seen.acknowledged_units[tenant_id]}"
                f" + in doubt {found} found on a queue (+ up to {unsettled} unsettled);"
                f" {await asyncio.to_thread(_unexplained_usage, cluster, seen, tenant_id)}",
            )
        if billed + aside != metered:
            seen.violate(
                "billing", f"{tenant_id}: billed {billed} + set aside {aside} != {metered}"
            )
        if aside != set_aside[tenant_id]:
            seen.violate(
                "billing", f"{tenant_id}: {aside} set aside, reconcile reports {set_aside}"
            )
        totals.update(billed=billed, set_aside=aside, unsettled_in_doubt=unsettled)
    owners = {c: tenant_id for tenant_id, ids in customers.items() for c in ids}
    events = await cluster.standin_meter_events()
    for message in compare_meter_events(edges, events, owners)[:MAX_SHOWN]:
        seen.violate("billing", message)
    verdict.figures.update(
        {
            "billed units": totals["billed"],
            "set aside units": totals["set_aside"],
            "meter events": state["meter_events"],
            "meter event calls": state["calls"].get("POST /v1/billing/meter_events", 0),
        }
    )


def compare_meter_events(
    edges: list[Replica], events: list[tuple[str, str, int]], owners: dict[str, str]
) -> list[str]:
    """Each ledger row against the meter events the stand-in accepted, by identifier: a
    confirmed batch is there once, with its value and its tenant's customer; a batch set
    aside is not; and nothing is there that no ledger planned."""
    problems = []
    accepted: dict[str, tuple[str, int]] = {}
    for identifier, customer, value in events:
        if identifier in accepted:
            problems.append(f"the stand-in accepted identifier {identifier} twice")
        accepted[identifier] = (customer, value)
    planned: dict[str, tuple[str, Batch]] = {}
    for edge in edges:
        for identifier, batch in edge.batches.items():
            if identifier in planned:
                problems.append(
                    f"identifier {identifier} planned by {planned[identifier][0]} and {edge.name}"
                )
            planned[identifier] = (edge.name, batch)
    for identifier, (node, batch) in planned.items():
        held = accepted.pop(identifier, None)
        where = f"{node} batch {identifier} ({batch.tenant_id}, {batch.state}, {batch.value})"
        if batch.state == "confirmed" and held is None:
            problems.append(f"{where} is not at the stand-in")
        elif batch.state == "set_aside" and held is not None:
            problems.append(f"{where} is at the stand-in with value {held[1]}")
        elif held is not None and (held[1], owners.get(held[0])) != (
            batch.value,
            batch.tenant_id,
        ):
            problems.append(f"{where} is at the stand-in as {held[1]} for customer {held[0]}")
    for identifier, (customer, value) in accepted.items():
        problems.append(
            f"the stand-in holds {identifier} ({value} for {owners.get(customer, customer)}),"
            " which no ledger planned"
        )
    return problems


async def _reported_set_aside(cluster: Cluster, seen: Observations) -> Counter[str]:
    """Units each tenant has set aside, as `edge-node billing reconcile` reports them."""
    reported: Counter[str] = Counter()
    for node in cluster.nodes:
        code, out, err = await node.cli("billing", "reconcile", "--json")
        if code not in (0, 1) or not out:
            seen.violate("billing", f"billing reconcile on {node.node_id} failed ({code}): {err}")
            continue
        report = json.loads(out)
        for batch in report["set_aside"]:
            reported[batch["tenant_id"]] += batch["units"]
        if code == 1 and not report["set_aside"]:
            seen.violate("billing", f"reconcile on {node.node_id} disagrees: {report}")
    return reported


def _unexplained_usage(cluster: Cluster, seen: Observations, tenant_id: str) -> str:
    """Usage events still on the queues that no acknowledged or in-doubt request explains,
    or that appear twice: the evidence for a billing discrepancy."""
    counts: Counter[str] = Counter()
    unexplained = []
    for node in cluster.nodes:
        for event in node.usage_events(10_000_000):
            if event["tenant_id"] != tenant_id:
                continue
            rid = event["request_id"]
            counts[rid] += 1
            if rid not in seen.acknowledged_requests and rid not in seen.in_doubt:
                unexplained.append(event)
    twice = [rid for rid, n in counts.items() if n > 1]
    return f"events nobody acknowledged {unexplained[:5]}, request ids metered twice {twice[:5]}"


def check_logs(cluster: Cluster, seen: Observations) -> None:
    """A traceback in a daemon's log is a bug shown (SIGKILL leaves none); each once."""
    for node in cluster.nodes:
        logs = node.logs()
        count = logs.count("Traceback")
        if count > seen.tracebacks[node.node_id]:
            start = logs.rindex("Traceback")
            seen.violate(
                "errors", f"{node.node_id} logged a traceback: {logs[start : start + 1500]}"
            )
        seen.tracebacks[node.node_id] = count


def _traffic_figures(seen: Observations, central: Replica) -> dict[str, Any]:
    in_doubt = list(seen.in_doubt.values())
    return {
        "requests": seen.requests,
        "acknowledged billable": sum(seen.acknowledged_units.values()),
        "in doubt": len(in_doubt),
        "of which metered": sum(d.metered is True for d in in_doubt),
        "unsettled": sum(d.metered is None for d in in_doubt),
        "refused (node down)": seen.refused,
        "writes acknowledged": sum(op.acknowledged for ops in seen.writes.values() for op in ops),
        "ratings rows": sum(len(rows) for rows in central.rows.values()),
        "503s": sum(n for status, n in seen.statuses.items() if status.startswith("503")),
    }
