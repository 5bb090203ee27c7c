"""Configuration sections for how the node serves: listener, TLS, worker processes,
credentials, rate limits, request limits, abuse detection, metrics and logs.

Each field is a documented `setting`; edge_node.config builds and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edge_node.config.schema import setting


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting(
        "127.0.0.1",
        "Address to listen on: an IP, or a name (the node listens on every address it resolves "
        "to, every worker on each); empty for all interfaces.",
    )
    port: int = setting(
        8080,
        "TCP port to listen on; 0 picks a free one, the same on every address.",
        minimum=0,
        maximum=65535,
    )
    max_body_bytes: int = setting(
        16384, "Largest request body accepted; larger ones get 413.", minimum=1024, maximum=1 << 24
    )
    shutdown_grace_seconds: float = setting(
        10.0, "How long in-flight requests may run after SIGTERM.", minimum=0, maximum=600
    )


@dataclass(frozen=True)
class RateLimitConfig:
    per_minute: int = setting(
        1000,
        "Default requests per minute per tenant (a tenant's own limit overrides it).",
        minimum=1,
        maximum=100_000_000,
    )
    legacy_headers: bool = setting(
        False,
        "Also send `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the per-minute "
        "bucket), beside `RateLimit-Policy` and `RateLimit`, for clients that read the older "
        "fields (docs/api.md).",
    )


@dataclass(frozen=True)
class PlanQuotaConfig:
    allowance: int = setting(
        0,
        "Units a tenant on this plan may use per billing period (docs/quotas.md); 0: no "
        "allowance, usage is not limited (a tenant's own quota overrides it).",
        minimum=0,
        maximum=1 << 62,
    )
    policy: Literal["overage", "block"] = setting(
        "overage",
        "Past the allowance: `overage` serves and bills the usage; `block` answers 429 "
        "`quota-exhausted` until the period ends.",
    )
    partition_policy: Literal["refuse", "local"] = setting(
        "refuse",
        "With a central database, for a `block` allowance: what this node does once it has "
        "spent its lease and cannot get another (PostgreSQL unreachable): `refuse` answers "
        "503 `quota-unavailable`; `local` serves `partition_allowance` more units in the "
        'period on its own (docs/quotas.md, "Several nodes").',
    )
    partition_allowance: int = setting(
        0,
        "Units a node cut off from the central database may serve past its lease in a "
        'period, with `partition_policy = "local"`; each adds to the fleet\'s overshoot bound.',
        minimum=0,
        maximum=1 << 62,
    )


@dataclass(frozen=True)
class QuotasConfig:
    payg: PlanQuotaConfig = field(
        default_factory=PlanQuotaConfig, metadata={"doc": "The `payg` plan's allowance."}
    )
    tiered: PlanQuotaConfig = field(
        default_factory=PlanQuotaConfig, metadata={"doc": "The `tiered` plan's allowance."}
    )
    flat: PlanQuotaConfig = field(
        default_factory=PlanQuotaConfig, metadata={"doc": "The `flat` plan's allowance."}
    )
    lease_share: float = setting(
        0.1,
        "With a central database: the share of what is left of a `block` allowance that a "
        "node claims at a time (at least 1 unit). Smaller shares leave less unused in idle "
        "nodes' leases; larger ones renew less often.",
        minimum=0.001,
        maximum=1.0,
    )
    lease_seconds: float = setting(
        60.0,
        "How long a lease lasts unless renewed: a node cut off stops spending it then, and "
        "the central database may give what it did not report spent to other nodes.",
        minimum=5,
        maximum=3600,
    )
    lease_interval_seconds: float = setting(
        0.5,
        "How often a node reports its spend and renews the leases it is running out of; at "
        "most a quarter of `lease_seconds`.",
        minimum=0.05,
        maximum=60,
    )
    lease_idle_seconds: float = setting(
        60.0,
        "A lease nothing has been spent from for this long is given back to the fleet.",
        minimum=1,
        maximum=86400,
    )


@dataclass(frozen=True)
class JwtKeyConfig:
    algorithm: Literal["HS256", "RS256", "ES256", "EdDSA"] = setting(
        "HS256", "The one algorithm this key verifies (pinned: no other is accepted with it)."
    )
    file: str = setting("", "File holding the HS256 secret or the PEM public key.")
    kid: str = setting("", "Key id matched against the token's `kid` header; empty matches any.")


@dataclass(frozen=True)
class JwtConfig:
    keys: tuple[JwtKeyConfig, ...] = setting((), "Verification keys for bearer tokens.")
    issuer: str = setting("", "Required `iss` claim; empty means not checked.")
    audience: str = setting("", "Required `aud` claim; empty means not checked.")
    leeway_seconds: int = setting(0, "Clock skew allowed on `exp`.", minimum=0, maximum=300)
    cache_size: int = setting(
        10000, "Verified tokens kept until they expire.", minimum=0, maximum=1_000_000
    )


@dataclass(frozen=True)
class AuthConfig:
    jwt: JwtConfig = field(
        default_factory=JwtConfig, metadata={"doc": "Bearer token (JWT) verification."}
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_request_line_bytes: int = setting(
        8190,
        "Longest request line (method, path with query string, version); longer gets 414.",
        minimum=256,
        maximum=65536,
    )
    max_query_bytes: int = setting(
        4096, "Longest query string (after `?`); longer gets 414.", minimum=0, maximum=65536
    )
    max_header_line_bytes: int = setting(
        8190,
        "Longest single header (name and value); longer gets 431.",
        minimum=256,
        maximum=65536,
    )
    max_header_bytes: int = setting(
        65536,
        "Largest total of all header names and values; larger gets 431.",
        minimum=1024,
        maximum=1 << 20,
    )
    max_headers: int = setting(
        64, "Most header fields in one request; more gets 431.", minimum=8, maximum=1024
    )
    header_timeout_seconds: float = setting(
        15.0,
        "A connection must deliver a request's complete headers within this many seconds of "
        "opening or of its previous response, else it is closed (also the idle keep-alive "
        "timeout): clients that trickle headers are cut off.",
        minimum=0.5,
        maximum=3600,
    )
    body_timeout_seconds: float = setting(
        30.0,
        "A request's whole body must arrive within this many seconds of its headers, else "
        "the request gets 408 and the connection is closed: clients that trickle bodies are "
        "cut off.",
        minimum=0.5,
        maximum=3600,
    )


@dataclass(frozen=True)
class AbuseConfig:
    enabled: bool = setting(
        True, "Watch every tenant and client IP for request spikes (metric and log event)."
    )
    window_seconds: float = setting(
        10.0,
        "Length of the short window whose rate is compared with the baseline.",
        minimum=1,
        maximum=3600,
    )
    baseline_half_life_seconds: float = setting(
        600.0,
        "Half-life of the exponentially weighted baseline rate: how fast it forgets the past.",
        minimum=10,
        maximum=604800,
    )
    spike_factor: float = setting(
        10.0,
        "A window is a spike when its rate exceeds this many times the baseline rate.",
        minimum=1.5,
        maximum=10000,
    )
    min_rate_per_second: float = setting(
        20.0,
        "Floor: a window slower than this many requests per second is never a spike, "
        "whatever its baseline.",
        minimum=0.1,
        maximum=1_000_000,
    )
    block: bool = setting(
        False, "Block a client IP whose rate spikes, for block_seconds (403 ip-blocked)."
    )
    block_seconds: int = setting(
        600, "How long a spiking IP stays blocked.", minimum=1, maximum=30 * 86400
    )
    allow_cidrs: tuple[str, ...] = setting(
        (),
        'Addresses and networks (CIDR) that are never blocked, e.g. ["10.0.0.0/8"]; their '
        "spikes are still counted and logged.",
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "Proxies (CIDR) whose X-Forwarded-For is believed: when the peer is one, the client "
        "IP is the rightmost X-Forwarded-For address that is not a trusted proxy. Empty: the "
        "client IP is always the peer address.",
    )
    max_tracked: int = setting(
        100_000,
        "Most tenants and IPs whose rates are tracked at once (the stalest are forgotten).",
        minimum=100,
        maximum=10_000_000,
    )
    lift_check_interval_seconds: float = setting(
        1.0,
        "How often the daemon looks for blocks added or lifted by `edge-node blocks` (or "
        "another worker) in node.sqlite.",
        minimum=0.05,
        maximum=60,
    )


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = setting(
        "",
        "PEM certificate chain served over TLS 1.3 (no older version is accepted), or "
        "$CREDENTIALS_DIRECTORY/<name>; empty: plain HTTP. Re-read on SIGHUP.",
    )
    key_file: str = setting(
        "", "PEM private key of tls.cert_file (unencrypted), or a credential. Re-read on SIGHUP."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file)


@dataclass(frozen=True)
class WorkersConfig:
    count: int = setting(
        1,
        "Processes serving the one port (accepting from the supervisor's listening sockets) under "
        "a supervisor that also runs the sync worker and upgrades them without a restart; 1: a "
        "single process. Command line: serve --workers.",
        minimum=1,
        maximum=64,
    )
    restart_delay_seconds: float = setting(
        0.5,
        "Delay before a dead worker is restarted; it doubles with each death in a row, up to "
        "workers.restart_delay_max_seconds.",
        minimum=0.01,
        maximum=60,
    )
    restart_delay_max_seconds: float = setting(
        30.0,
        "Longest delay before a restart; a worker that ran this long resets its delay.",
        minimum=0.1,
        maximum=3600,
    )
    upgrade_timeout_seconds: float = setting(
        60.0,
        "An upgrade (SIGUSR2, edge-node upgrade) rolls back when a new worker is not ready "
        "(its /readyz answering 200) within this long; the old workers serve meanwhile.",
        minimum=1,
        maximum=3600,
    )
    upgrade_probation_seconds: float = setting(
        5.0,
        "After every new worker is ready, how long the supervisor keeps asking their /readyz "
        "before it stops the old workers; a failure meanwhile rolls the upgrade back.",
        minimum=0,
        maximum=600,
    )


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(
        True, "Serve Prometheus metrics at GET /metrics (off: 404, and requests are not timed)."
    )
    tenant_label: bool = setting(
        False,
        "Label request and rate-limit counters with the tenant id; one series per tenant and "
        "route, so only for nodes with few tenants.",
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = setting(
        "info", "Least severe log level written (one JSON object per line on stderr)."
    )
