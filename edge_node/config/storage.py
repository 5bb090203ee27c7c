"""Configuration sections for what the node keeps on disk: SQLite files, the usage meter and
its queue, encryption at rest, secret files.

Each field is a documented `setting`; edge_node.config builds and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any, Literal

from edge_node.config.schema import setting
from edge_node.usage.operations import OPERATIONS, Operation


@dataclass(frozen=True)
class StorageConfig:
    synchronous: Literal["normal", "full"] = setting(
        "normal",
        "SQLite synchronous mode for tenant files: `normal` survives process crashes, "
        "`full` also survives power loss at the cost of an fsync per write.",
    )
    max_open_tenants: int = setting(
        256, "Tenant databases kept open at once (least recently used closed first).", minimum=1
    )
    busy_timeout_ms: int = setting(
        5000,
        "How long a write waits for another process's lock (a tenant's writes on the event "
        "loop wait for it without stopping the loop; past this they answer 503).",
        minimum=0,
        maximum=60000,
    )
    min_free_bytes: int = setting(
        64 << 20,
        "Free-space floor of the filesystem holding the data directory: below it billable "
        "requests are refused (503 `storage-unavailable`) and `/readyz` fails, so the usage "
        "queue always has room for the usage of requests already admitted (0: no floor).",
        minimum=0,
    )
    checkpoint_interval_seconds: float = setting(
        1.0,
        "How often written tenant files are checkpointed in a background thread (WAL copied "
        "into the database), keeping those fsyncs off the request path. A file written "
        "steadily by one process has its WAL started over from that thread as well once it "
        "passes 4 MiB; written by several (serve --workers), past 16 MiB by the writer.",
        minimum=0.05,
        maximum=60,
    )


class OperationUnits:
    """`[meter.units]`: the units each billable operation bills, one setting per entry of the
    operation table (edge_node.usage.operations) named by its `setting`."""

    def units(self, operation: str) -> int:
        """Units for an operation name such as `rating.create`; 0 means it does not bill."""
        return int(getattr(self, _SETTINGS[operation]))


_SETTINGS = {operation.name: operation.setting for operation in OPERATIONS}


def _units_setting(operation: Operation) -> tuple[str, type[int], Any]:
    doc = f"Units billed for `{operation.name}`, {operation.what}."
    return operation.setting, int, setting(operation.default_units, doc, minimum=0)


# Made from the table, so an operation added there is a documented setting here without a
# second list to keep in step. Type checkers see the base class: they cannot follow
# make_dataclass, and the code reads units only through `units(operation)`.
if TYPE_CHECKING:
    MeterUnitsConfig = OperationUnits
else:
    MeterUnitsConfig = make_dataclass(
        "MeterUnitsConfig",
        [_units_setting(operation) for operation in OPERATIONS],
        bases=(OperationUnits,),
        frozen=True,
        namespace={"__module__": __name__},  # for pickling and reprs; 3.12 has `module=`
    )


@dataclass(frozen=True)
class MeterConfig:
    enabled: bool = setting(True, "Record a usage event for every billable request served.")
    durability: Literal["strict", "batched"] = setting(
        "strict",
        "`strict`: a response is sent only once its usage event is on disk. `batched`: the "
        "response does not wait; a crash can lose the events of one group commit.",
    )
    batched_commit_interval_ms: float = setting(
        5.0,
        "In `batched` durability, the least time the usage queue gathers events before each "
        "group commit (its fsync), when `queue.commit_interval_ms` is shorter: one fsync per "
        "few requests rather than per request when they are few, and a loss window on a crash "
        "that much longer.",
        minimum=0,
        maximum=1000,
    )
    on_full: Literal["reject", "serve_unmetered"] = setting(
        "reject",
        "When the usage queue is full: `reject` answers billable requests 503 with Retry-After; "
        "`serve_unmetered` serves them and counts them as unmetered.",
    )
    units: MeterUnitsConfig = field(
        default_factory=MeterUnitsConfig, metadata={"doc": "Units per operation (0: not billed)."}
    )


@dataclass(frozen=True)
class QueueConfig:
    max_bytes: int = setting(
        1 << 30,
        "Bound on the usage queue's bytes on disk; beyond it see meter.on_full.",
        minimum=1 << 20,
    )
    segment_bytes: int = setting(
        16 << 20,
        "Size at which a queue segment file is rolled (at most max_bytes / 2).",
        minimum=1 << 12,
    )
    commit_interval_ms: float = setting(
        0.0,
        "How long a group commit waits for more appends before its fsync (0: it takes what "
        "arrived while the previous fsync ran).",
        minimum=0,
        maximum=1000,
    )


@dataclass(frozen=True)
class EncryptionConfig:
    master_key_file: str = setting(
        "",
        "File holding this node's master key (32 random bytes, base64), which wraps the tenant "
        "data keys; or $CREDENTIALS_DIRECTORY/<name>. Never the key itself. Empty: "
        "data_dir/keys/master.key, created with mode 0600 on first use.",
    )
    fleet_key_file: str = setting(
        "",
        "File holding the fleet key (32 random bytes, base64), the same on every node of a "
        "fleet: it wraps the data keys carried in the central registry, so every node can "
        "read the comments any node wrote. Empty: data keys stay on this node.",
    )
    previous_fleet_key_file: str = setting(
        "",
        "File holding the fleet key being retired, during a fleet-key rotation: data keys "
        "wrapped by it still unwrap, new uploads are wrapped by fleet_key_file, and "
        "`edge-node keys rotate-fleet` re-wraps the central ones. Empty once the rotation is "
        "over (docs/security.md).",
    )


@dataclass(frozen=True)
class SecretsConfig:
    check_interval_seconds: float = setting(
        1.0,
        "A secret file is checked for a change (mtime, size, inode) at most this often when "
        "the secret is used, and re-read if it changed; 0: never, only SIGHUP reloads.",
        minimum=0,
        maximum=3600,
    )
