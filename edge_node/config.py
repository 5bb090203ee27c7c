"""Configuration: one frozen, typed object built from defaults, a TOML file and EDGE_NODE_* vars.

Every setting is a dataclass field whose metadata documents it. The loader walks the
dataclasses, so the TOML keys, the environment variable names (`EDGE_NODE_` + the dotted
path upper-cased with dots as underscores, e.g. `EDGE_NODE_RATE_LIMIT_PER_MINUTE`) and the
validation all come from the same declarations. Nothing else in the project reads
`os.environ`. A setting whose value starts with `$CREDENTIALS_DIRECTORY/` names a systemd
credential and is expanded here to the directory systemd gave this run.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from edge_node.errors import ConfigError

ENV_PREFIX = "EDGE_NODE_"
CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: re.Pattern[str] | None = None,
) -> Any:
    """A documented configuration field with optional bounds."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "pattern": pattern}
    if isinstance(default, tuple | list | dict):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8080, "TCP port to listen on.", minimum=0, maximum=65535)
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
        5000, "How long a write waits for another process's lock.", minimum=0, maximum=60000
    )
    checkpoint_interval_seconds: float = setting(
        1.0,
        "How often written tenant files are checkpointed in a background thread (WAL copied "
        "into the database), keeping those fsyncs off the request path.",
        minimum=0.05,
        maximum=60,
    )


@dataclass(frozen=True)
class MeterUnitsConfig:
    rating_create: int = setting(1, "Units billed for a POST that created a rating.", minimum=0)
    rating_update: int = setting(1, "Units billed for a POST that replaced a rating.", minimum=0)
    rating_list: int = setting(1, "Units billed for a page of ratings.", minimum=0)
    score_read: int = setting(1, "Units billed for an item score read.", minimum=0)
    rating_delete: int = setting(1, "Units billed for a deleted rating.", minimum=0)
    user_erase: int = setting(1, "Units billed for a user erasure.", minimum=0)

    def units(self, operation: str) -> int:
        """Units for an operation name such as `rating.create`; 0 means it does not bill."""
        return int(getattr(self, operation.replace(".", "_")))


@dataclass(frozen=True)
class MeterConfig:
    enabled: bool = setting(True, "Record a usage event for every billable request served.")
    durability: Literal["strict", "batched"] = setting(
        "strict",
        "`strict`: a response is sent only once its usage event is on disk. `batched`: the "
        "response does not wait; a crash can lose the events of one group commit.",
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
class CentralConfig:
    dsns: tuple[str, ...] = setting(
        (),
        "PostgreSQL DSNs (postgresql://...) of the central database, one per shard; each "
        "tenant maps to one shard by a stable hash of its id. Empty: a standalone node.",
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
        "The billing meter's event name (bootstrap creates the meter for it).",
        pattern=re.compile(r"[A-Za-z0-9_.:-]{1,100}"),
    )
    catalog_file: str = setting(
        "",
        "JSON file of the meter, product and per-plan price ids written by `edge-node stripe "
        "bootstrap`; empty: stripe-catalog.json in data_dir.",
    )
    collection_method: Literal["send_invoice", "charge_automatically"] = setting(
        "send_invoice",
        "How subscriptions created for tenants collect payment: `send_invoice` needs no card "
        "on file; `charge_automatically` charges the customer's default payment method.",
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
class SecretsConfig:
    check_interval_seconds: float = setting(
        1.0,
        "A secret file is checked for a change (mtime, size, inode) at most this often when "
        "the secret is used, and re-read if it changed; 0: never, only SIGHUP reloads.",
        minimum=0,
        maximum=3600,
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
        "A meter event sent without a recorded answer is set aside, not resent, once this long "
        "has passed since its first send: Stripe deduplicates identifiers for 24 hours only.",
        minimum=0.01,
        maximum=23.5,
    )
    poll_interval_seconds: float = setting(
        1.0,
        "How often the billing consumer looks for new usage when idle.",
        minimum=0.01,
        maximum=60,
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
        "Processes serving the one port (SO_REUSEPORT) under a supervisor that also runs the "
        "sync worker; 1: a single process. Command line: serve --workers.",
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


@dataclass(frozen=True)
class Config:
    node_id: str = setting("", "This node's id in usage events and sync; default: host name.")
    data_dir: str = setting("./var", "Directory holding node.sqlite, tenants/ and queue/.")
    server: ServerConfig = field(
        default_factory=ServerConfig, metadata={"doc": "The HTTP listener."}
    )
    rate_limit: RateLimitConfig = field(
        default_factory=RateLimitConfig, metadata={"doc": "Per-tenant token buckets."}
    )
    auth: AuthConfig = field(default_factory=AuthConfig, metadata={"doc": "Credentials."})
    storage: StorageConfig = field(
        default_factory=StorageConfig, metadata={"doc": "Local SQLite storage."}
    )
    meter: MeterConfig = field(default_factory=MeterConfig, metadata={"doc": "Usage metering."})
    queue: QueueConfig = field(
        default_factory=QueueConfig, metadata={"doc": "The durable usage queue."}
    )
    central: CentralConfig = field(
        default_factory=CentralConfig, metadata={"doc": "Sync with the central PostgreSQL."}
    )
    stripe: StripeConfig = field(
        default_factory=StripeConfig, metadata={"doc": "Stripe billing (off without a key file)."}
    )
    billing: BillingConfig = field(
        default_factory=BillingConfig, metadata={"doc": "Usage flushed to Stripe meter events."}
    )
    webhooks: WebhooksConfig = field(
        default_factory=WebhooksConfig, metadata={"doc": "Stripe webhooks (off without a secret)."}
    )
    secrets: SecretsConfig = field(
        default_factory=SecretsConfig, metadata={"doc": "Reloading secrets from their files."}
    )
    encryption: EncryptionConfig = field(
        default_factory=EncryptionConfig,
        metadata={"doc": "Encryption at rest of rating comments (docs/security.md)."},
    )
    limits: LimitsConfig = field(
        default_factory=LimitsConfig, metadata={"doc": "Request size limits and slow clients."}
    )
    abuse: AbuseConfig = field(
        default_factory=AbuseConfig, metadata={"doc": "Spike detection and IP blocks."}
    )
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig, metadata={"doc": "Prometheus metrics."}
    )
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"doc": "Logs."})
    tls: TlsConfig = field(
        default_factory=TlsConfig, metadata={"doc": "TLS for the listener (off without files)."}
    )
    workers: WorkersConfig = field(
        default_factory=WorkersConfig, metadata={"doc": "Serving processes (serve --workers)."}
    )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < environment < explicit overrides.

    `overrides` maps dotted keys (`server.port`) to values, as command-line flags give them.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_toml(Path(path))
    env = os.environ if environ is None else environ
    _apply_environment(Config, raw, env, prefix=ENV_PREFIX, dotted="")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    config: Config = _expand_credentials(_build(Config, raw, ""), env, "")
    if not config.node_id:
        config = dataclasses.replace(config, node_id=_default_node_id())
    if not NODE_ID_PATTERN.match(config.node_id):
        raise ConfigError(
            f"node_id must be 1-63 letters, digits, '.', '_' or '-', got {config.node_id!r}"
        )
    return config


def iter_settings(cls: type[Any] = Config, dotted: str = "") -> typing.Iterator[tuple[str, Any]]:
    """Every leaf setting as (dotted key, dataclass field), for docs and checks."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{dotted}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from iter_settings(hints[f.name], key + ".")
        else:
            yield key, f


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.upper().replace(".", "_")


def _expand_credentials(value: Any, env: Mapping[str, str], key: str) -> Any:
    """Every setting that names a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`) as the
    path it has in this run: systemd picks the directory when it starts the service."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{
                f.name: _expand_credentials(getattr(value, f.name), env, f"{key}{f.name}.")
                for f in dataclasses.fields(value)
            },
        )
    if isinstance(value, tuple):
        return tuple(
            _expand_credentials(item, env, f"{key[:-1]}[{i}].") for i, item in enumerate(value)
        )
    if isinstance(value, str) and value.startswith(CREDENTIALS_PREFIX):
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"{key[:-1]} names a systemd credential, but CREDENTIALS_DIRECTORY is not set:"
                " run edge-node from its unit with LoadCredential= (or give a plain path)"
            )
        return str(Path(directory) / value.removeprefix(CREDENTIALS_PREFIX))
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None


def _apply_environment(
    cls: type[Any], raw: dict[str, Any], env: Mapping[str, str], *, prefix: str, dotted: str
) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        key = f"{dotted}{f.name}"
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            _apply_environment(kind, raw, env, prefix=prefix, dotted=key + ".")
            continue
        value = env.get(env_name(key))
        if value is None:
            continue
        if typing.get_origin(kind) is tuple:
            try:
                _set_dotted(raw, key, orjson.loads(value))
            except orjson.JSONDecodeError:
                raise ConfigError(f"{env_name(key)} must be a JSON array, got {value!r}") from None
        else:
            _set_dotted(raw, key, _EnvText(value))


class _EnvText(str):
    """A value that came from the environment as text, to be converted to the field's type."""

    __slots__ = ()


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


Built = TypeVar("Built")


def _build(cls: type[Built], raw: Any, dotted: str) -> Built:
    where = dotted.rstrip(".") or "the configuration"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            suggestion = f" (did you mean {dotted}{hint[0]}?)" if hint else ""
            raise ConfigError(f"unknown setting {dotted}{key}{suggestion}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], f, f"{dotted}{f.name}")
    return cls(**values)


def _convert(kind: Any, value: Any, f: dataclasses.Field[Any], key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, key + ".")  # type: ignore[arg-type]
    origin = typing.get_origin(kind)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if dataclasses.is_dataclass(item_kind):
            return tuple(_build(item_kind, v, f"{key}[{i}].") for i, v in enumerate(value))  # type: ignore[arg-type]
        return tuple(_convert(item_kind, v, f, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return _check_bounds(_scalar(kind, value, key), f, key)


def _scalar(kind: Any, value: Any, key: str) -> Any:
    converter = _SCALARS.get(kind)
    if converter is None:  # pragma: no cover - a new setting type needs a converter here
        raise ConfigError(f"{key} has an unsupported type {kind!r}")
    if isinstance(value, _EnvText):
        converted = converter(str(value))
    elif isinstance(value, str) and kind is not str:
        converted = _INVALID  # TOML has real numbers and booleans; "8080" in quotes is a mistake
    else:
        converted = converter(value)
    if converted is _INVALID:
        expected = _EXPECTED.get(kind, "a string")
        raise ConfigError(f"{key} must be {expected}, got {value!r}")
    return converted


_INVALID = object()
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        word = value.lower()
        return word in _TRUE_WORDS if word in _TRUE_WORDS + _FALSE_WORDS else _INVALID
    return value if isinstance(value, bool) else _INVALID


def _to_int(value: Any) -> Any:
    if isinstance(value, str):
        return int(value) if re.fullmatch(r"[+-]?\d+", value) else _INVALID
    return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID


def _to_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return _INVALID
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _INVALID


def _to_str(value: Any) -> Any:
    return str(value) if isinstance(value, str) else _INVALID


_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _check_bounds(value: Any, f: dataclasses.Field[Any], key: str) -> Any:
    minimum, maximum = f.metadata.get("minimum"), f.metadata.get("maximum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be at most {maximum}, got {value!r}")
    pattern = f.metadata.get("pattern")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(f"{key} must match {pattern.pattern}, got {value!r}")
    return value


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].lstrip(".-_")
    return host or "edge-node"


@dataclass(frozen=True)
class ServiceEnvironment:
    """What the service manager (systemd, or the workers' supervisor) told this process."""

    notify_socket: str = ""
    watchdog_usec: int = 0


def service_environment(environ: Mapping[str, str] | None = None) -> ServiceEnvironment:
    """NOTIFY_SOCKET and WATCHDOG_USEC, the latter only when WATCHDOG_PID (if set) is us."""
    env = os.environ if environ is None else environ
    watchdog_usec = 0
    pid = env.get("WATCHDOG_PID", "")
    if env.get("WATCHDOG_USEC") and (not pid or pid == str(os.getpid())):
        text = env["WATCHDOG_USEC"]
        if not text.isdigit():
            raise ConfigError(f"WATCHDOG_USEC must be a number of microseconds, got {text!r}")
        watchdog_usec = int(text)
    return ServiceEnvironment(env.get("NOTIFY_SOCKET", ""), watchdog_usec)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a child it starts, without what systemd meant for this
    process alone (its notify socket and watchdog), plus `extra`."""
    own = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    return {**{k: v for k, v in os.environ.items() if k not in own}, **extra}
