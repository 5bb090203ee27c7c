"""Configuration sections for what the node talks to: the central PostgreSQL and Stripe
(API, webhooks, the usage flush).

Each field is a documented `setting`; edge_node.config builds and validates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge_node.config.schema import setting


@dataclass(frozen=True)
class CentralConfig:
    dsns: tuple[str, ...] = setting(
        (),
        "PostgreSQL DSNs (postgresql://...) of the central database, one per shard; each "
        "tenant maps to one shard by a stable hash of its id. Empty: a standalone node.",
    )
    standby_dsns: tuple[str, ...] = setting(
        (),
        "Hot standbys to read downloads from, one per shard in the order of dsns ('' for a "
        "shard read from its primary); uploads always go to the primary. Empty: every "
        "download from the primary.",
    )
    sync_interval_seconds: float = setting(
        5.0, "How often the sync worker uploads and downloads.", minimum=0.05, maximum=3600
    )
    batch_size: int = setting(
        1000, "Rows uploaded or downloaded per round trip.", minimum=1, maximum=100_000
    )
    lock_timeout_seconds: float = setting(
        5.0,
        "Longest an upload waits for central rows another session has locked; past it that "
        "tenant is retried later with backoff and the other tenants go on.",
        minimum=0.01,
        maximum=600,
    )
    horizon_lag_warning_seconds: float = setting(
        60.0,
        "How far downloads may lag behind the central database (a long transaction holding "
        "the download horizon back) before `sync status` shows the shard as lagging.",
        minimum=1,
        maximum=86400,
    )


@dataclass(frozen=True)
class StripeConfig:
    api_key_file: str = setting(
        "",
        "File holding the Stripe secret key (or a systemd credential path); never the key "
        "itself. Empty: Stripe is off (usage is still metered and queued).",
    )
    api_base: str = setting(
        "", "Stripe API base URL; empty: Stripe's own (https://api.stripe.com)."
    )
    meter_events_base: str = setting(
        "", "Base URL of Stripe's v2 meter event stream; empty: Stripe's own."
    )
    max_network_retries: int = setting(
        0,
        "Retries the Stripe SDK makes by itself; 0 leaves every retry to the sync worker's "
        "backoff loop.",
        minimum=0,
        maximum=10,
    )
    timeout_seconds: float = setting(
        20.0, "Longest a single Stripe call may take.", minimum=0.1, maximum=600
    )
    meter_event_name: str = setting(
        "edge_node_requests",
        "The billing meter's event name (bootstrap creates the meter for it, and the unpriced "
        "meter of flat-plan usage for it followed by `_included`).",
        pattern=re.compile(r"(?![A-Za-z0-9_.:-]*_included$)[A-Za-z0-9_.:-]{1,91}"),
    )
    catalog_file: str = setting(
        "",
        "JSON file of the meter, product and per-plan price ids written by `edge-node stripe "
        "bootstrap`; empty: stripe-catalog.json in data_dir.",
    )
    collection_method: Literal["send_invoice", "charge_automatically"] = setting(
        "send_invoice",
        "How subscriptions created for tenants collect payment. `send_invoice` (the default) "
        "emails each invoice with a link to pay it: it reaches a customer with no card on "
        "file, and needs the tenant's email (`tenants create --email`; a tenant without one "
        "is refused). `charge_automatically` charges the customer's default payment method, "
        "which a customer made by the node does not have: its invoices fail until one is "
        "attached.",
    )
    invoice_grace_hours: float = setting(
        1.0,
        "The account's invoice finalization grace (Stripe: Invoice settings, \"Invoice "
        "finalization grace period\"; 1 hour by default, at most 72): how long a period's "
        "invoice stays a draft, taking late usage, after the period ends. Stripe offers no API "
        "to set it: set it in the Dashboard to this value; `stripe bootstrap` reads it back "
        "from the account's draft invoices and fails when it differs (docs/billing.md).",
        minimum=1,
        maximum=72,
    )
    days_until_due: int = setting(
        30, "Days a sent invoice is due in (collection_method send_invoice).", minimum=1
    )
    provisioning_interval_seconds: float = setting(
        5.0,
        "How often the sync worker looks for tenants without a Stripe customer or subscription.",
        minimum=0.05,
        maximum=3600,
    )

    @property
    def enabled(self) -> bool:
        return bool(self.api_key_file)


@dataclass(frozen=True)
class WebhooksConfig:
    secret_file: str = setting(
        "",
        "File holding the Stripe webhook endpoint's signing secret (whsec_...), or "
        "$CREDENTIALS_DIRECTORY/<name>; never the secret itself. Empty: no webhooks (404).",
    )
    previous_secret_file: str = setting(
        "",
        "File holding the previous signing secret, also accepted while a rotation is under "
        "way; empty: none.",
    )
    tolerance_seconds: int = setting(
        300,
        "How far a signature's timestamp may be from now before the event is refused as stale.",
        minimum=1,
        maximum=3600,
    )
    past_due_grace_hours: float = setting(
        72.0,
        "How long a tenant whose payment failed is still served; after it, 402.",
        minimum=0,
        maximum=8760,
    )
    max_body_bytes: int = setting(
        1 << 20, "Largest event body accepted; larger ones get 413.", minimum=1024, maximum=1 << 24
    )
    unknown_tenant_retry_hours: float = setting(
        72.0,
        "An event about a tenant this node does not know (not synced down yet) is answered "
        "503, so Stripe delivers it again, until it is this old; then it is recorded as "
        "unknown_tenant. Stripe retries for about 72 hours.",
        minimum=0,
        maximum=720,
    )


@dataclass(frozen=True)
class BillingConfig:
    window_seconds: int = setting(
        60,
        "Usage is summed per tenant over windows of this many seconds (by the time each request "
        "was served); each tenant's window becomes one Stripe meter event.",
        minimum=1,
        maximum=86400,
    )
    max_batches_per_round: int = setting(
        500, "Meter events sent per round at most.", minimum=1, maximum=100_000
    )
    concurrency: int = setting(
        8,
        "Customers whose meter events are sent at once (each customer's go one at a time, as "
        "Stripe requires).",
        minimum=1,
        maximum=256,
    )
    unknown_outcome_horizon_hours: float = setting(
        23.0,
        "A meter event sent without a recorded answer is resent under its identifier until "
        "this long has passed since its first send (Stripe deduplicates identifiers for 24 "
        "hours only); after that Stripe's meter event summaries settle whether it landed.",
        minimum=0.01,
        maximum=23.5,
    )
    stamp_slots: int = setting(
        1,
        "How many edge nodes may bill the same customers (the same on each of them): each "
        "node stamps its meter events only in the minutes of its own slot (minute number "
        "modulo stamp_slots = stamp_slot), so Stripe's per-minute meter event summaries show "
        "one node's usage alone and an unknown outcome is decidable per node.",
        minimum=1,
        maximum=5,
    )
    stamp_slot: int = setting(
        0,
        "This node's slot, 0 to stamp_slots - 1, different on every node that bills the "
        "same customers.",
        minimum=0,
        maximum=4,
    )
    poll_interval_seconds: float = setting(
        1.0,
        "How often the billing consumer looks for new usage when idle.",
        minimum=0.01,
        maximum=60,
    )
