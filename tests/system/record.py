"""What the clients saw: the acknowledged writes, the billable requests, every answer.

This is the truth the checker holds the system to. A request is *acknowledged* when its
complete answer arrived with a status below 400; it is *in doubt* when the connection broke
after it was sent (the node was SIGKILLed under it): it may or may not have been carried out
and billed, once at most. An in-doubt request's usage is looked up on the node's queue
right after the kill, before the node restarts (tests/system/faults.py), so most are
settled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Check = Literal["ratings", "billing", "isolation", "errors", "convergence", "keys"]
Key = tuple[str, str, str]  # tenant, user, item


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One rating write sent to one node, and what the client knows of its outcome."""

    kind: Literal["upsert", "delete"]
    key: Key
    node_id: str
    acknowledged: bool
    score: int | None = None
    comment: str | None = None
    # An acknowledged upsert's conflict key: (updated_at in microseconds, origin node).
    stamp: tuple[int, str] | None = None
    # A delete's tombstone is stamped no earlier than this (send time on the node's clock).
    not_before_us: int = 0


@dataclass(slots=True)
class InDoubt:
    tenant_id: str
    node_id: str
    incarnation: int
    billable: bool
    metered: bool | None = None  # None: not settled by a queue lookup


@dataclass
class Observations:
    """Everything the clients saw, accumulated over every schedule of a run."""

    acknowledged_units: Counter[str] = field(default_factory=Counter)  # per tenant
    acknowledged_requests: dict[str, str] = field(default_factory=dict)  # request id -> status
    writes: dict[Key, list[WriteOp]] = field(default_factory=dict)
    in_doubt: dict[str, InDoubt] = field(default_factory=dict)  # by request id
    in_flight: dict[str, InDoubt] = field(default_factory=dict)  # by request id
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503 usage-queue-full"
    refused: int = 0  # connections refused: the node was down, nothing was sent
    requests: int = 0
    violations: list[tuple[Check, str]] = field(default_factory=list)
    # (tenant, item) -> the users who ever sent an upsert of it, recorded before sending.
    raters: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    tracebacks: Counter[str] = field(default_factory=Counter)  # per node, reported so far

    def violate(self, check: Check, message: str) -> None:
        self.violations.append((check, message))

    def rating_sent(self, tenant_id: str, user: str, item: str) -> None:
        """`user` is about to upsert `item`: from now on a score may count its rating."""
        self.raters.setdefault((tenant_id, item), set()).add(user)

    def write(self, op: WriteOp) -> None:
        self.writes.setdefault(op.key, []).append(op)

    def in_flight_to(self, node_id: str, incarnation: int) -> dict[str, InDoubt]:
        """The requests sent to this run of a node and not answered yet, by request id."""
        return {
            request_id: doubt
            for request_id, doubt in self.in_flight.items()
            if doubt.node_id == node_id and doubt.incarnation == incarnation
        }

    def in_doubt_units(self, tenant_id: str) -> tuple[int, int]:
        """In-doubt billable requests of a tenant: (found metered, not settled)."""
        metered = unsettled = 0
        for doubt in self.in_doubt.values():
            if doubt.tenant_id == tenant_id and doubt.billable:
                metered += doubt.metered is True
                unsettled += doubt.metered is None
        return metered, unsettled

    def by_check(self) -> Counter[str]:
        return Counter(check for check, _ in self.violations)
