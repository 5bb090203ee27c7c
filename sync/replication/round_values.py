"""The values every part of a sync round shares: this node's storage and the round's report."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from edge_node.rating.store import TenantStores
from edge_node.tenants.registry import TenantRegistry


@dataclass(frozen=True)
class EdgeStorage:
    """What a round reads and writes on this node: node.sqlite (the registry, the billing
    events it shares, the shard checkpoints) and the tenant files."""

    node_database: sqlite3.Connection
    stores: TenantStores
    registry: TenantRegistry = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "registry", TenantRegistry(self.node_database))


@dataclass
class RoundReport:
    """What one round moved."""

    tenants: int = 0
    uploaded: int = 0  # rating rows sent to the central database
    downloaded: int = 0  # rating rows received from it
    applied: int = 0  # received rows that changed this node (the rest lost the conflict rule)
    # Rows of the registry (tenants, keys) and of billing events; key material is not counted.
    registry_uploaded: int = 0
    registry_applied: int = 0
    set_aside: int = 0
    # The ratings download: the durable bound it was capped at, and the horizon it reached
    # (every central row below it is read); None when the round failed before.
    bound: int | None = None
    bound_at: int | None = None  # when the bound was recorded (microseconds since the epoch)
    horizon: int | None = None
    standby_lag_seconds: float | None = None  # the standby downloads were read from
