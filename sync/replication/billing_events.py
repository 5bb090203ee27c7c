"""Billing events on the central database: upload this node's, download everyone's.

An edge uploads the Stripe events it applied (edge_node/tenants/shared_events.py) into
`billing_events` (migration 0004) with `ON CONFLICT DO NOTHING`: an event is a fact, and
Stripe delivering one event to two nodes leaves one row. Downloads page through the table by
`change_xid` below the snapshot horizon, like every replicated table (change_feed.py), so an
event committed out of order is not skipped; each edge applies what it downloads by the same
rule as a webhook, once per event id, and so converges with every other edge.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_node.tenants.shared_events import BillingReplica, SharedBillingEvent
from sync.postgres import as_columns, rows_changed, translated
from sync.replication.change_feed import ChangeFeed
from sync.replication.replicated_table import Checkpoint, ReplicatedTable, Upload
from sync.replication.round_values import EdgeStorage

if TYPE_CHECKING:
    from sync.postgres import Connection
    from sync.replication.change_feed import FeedRow

_UPLOAD = """
    INSERT INTO billing_events (tenant_id, event_id, type, created, customer_id,
                                subscription_id, target, origin_node)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[],
                         $6::text[], $7::text[], $8::text[])
    ON CONFLICT (tenant_id, event_id) DO NOTHING"""

_FIELDS = ("tenant_id", "event_id", "type", "created", "customer_id", "subscription_id", "target")

_CHANGES = ChangeFeed(
    "billing events",
    "billing_events e",
    "e",
    "e.tenant_id::text AS tenant_id, e.event_id, e.type, e.created, e.customer_id,"
    " e.subscription_id, e.target",
    (("tenant_id", "uuid"), ("event_id", "text")),
)


async def upload_billing_events(
    connection: Connection, events: Sequence[SharedBillingEvent], node_id: str
) -> int:
    """Store `events` centrally, in one transaction; how many were new there."""
    if not events:
        return 0
    columns = [*as_columns(events, _FIELDS), [node_id] * len(events)]
    with translated(f"uploading {len(events)} billing events"):
        async with connection.transaction():
            status = await connection.execute(_UPLOAD, *columns)
    return rows_changed(status)


def billing_events(edge: EdgeStorage) -> ReplicatedTable[SharedBillingEvent]:
    """Billing events as a round moves them, right after the registry, so a tenant's billing
    state follows it to every edge within the same round."""
    replica = BillingReplica(edge.node_database)

    def apply(records: list[FeedRow], checkpoint: Checkpoint) -> int:
        return replica.apply_downloaded([_event(r) for r in records], checkpoint=checkpoint)

    return ReplicatedTable(
        name="billing.events",
        feed=_CHANGES,
        read_checkpoint=edge.registry.sync_checkpoint,
        apply=apply,
        upload=Upload(
            pending=replica.pending_uploads,
            tenant=lambda event: event.tenant_id,
            send=functools.partial(upload_billing_events, node_id=edge.stores.node_id),
            acknowledge=replica.acknowledge_uploads,
            set_aside_as="billing_event",
        ),
        apply_waiting=replica.apply_waiting,  # events whose tenant has come down since
    )


def _event(record: FeedRow) -> SharedBillingEvent:
    return SharedBillingEvent(
        record["event_id"],
        record["tenant_id"],
        record["type"],
        record["created"],
        record["customer_id"],
        record["subscription_id"],
        record["target"],
    )
