"""Configuration: one frozen, typed object built from defaults, a TOML file and EDGE_NODE_* vars.

Every setting is a dataclass field whose metadata documents it. The loader walks the
dataclasses, so the TOML keys, the environment variable names (`EDGE_NODE_` + the dotted
path upper-cased with dots as underscores, e.g. `EDGE_NODE_RATE_LIMIT_PER_MINUTE`) and the
validation all come from the same declarations. Nothing else in the project reads
`os.environ`. A setting whose value starts with `$CREDENTIALS_DIRECTORY/` names a systemd
credential and is expanded here to the directory systemd gave this run. The sections'
dataclasses live in edge_node/config/ (serving, storage, outside), and the conversion of
raw values into them in edge_node/config/conversion.py; the sections are re-exported
here, so every module imports its configuration from edge_node.config.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edge_node.config.conversion import EnvText, build
from edge_node.config.outside import (
    BillingConfig,
    CentralConfig,
    StripeConfig,
    WebhooksConfig,
)
from edge_node.config.schema import setting
from edge_node.config.serving import (
    AbuseConfig,
    AuthConfig,
    JwtConfig,
    JwtKeyConfig,
    LimitsConfig,
    LoggingConfig,
    MetricsConfig,
    PlanQuotaConfig,
    QuotasConfig,
    RateLimitConfig,
    ServerConfig,
    TlsConfig,
    WorkersConfig,
)
from edge_node.config.storage import (
    EncryptionConfig,
    MeterConfig,
    MeterUnitsConfig,
    QueueConfig,
    SecretsConfig,
    StorageConfig,
)
from edge_node.errors import ConfigError

__all__ = [
    "CREDENTIALS_PREFIX",
    "ENV_PREFIX",
    "AbuseConfig",
    "AuthConfig",
    "BillingConfig",
    "CentralConfig",
    "Config",
    "EncryptionConfig",
    "JwtConfig",
    "JwtKeyConfig",
    "LimitsConfig",
    "LoggingConfig",
    "MeterConfig",
    "MeterUnitsConfig",
    "MetricsConfig",
    "PlanQuotaConfig",
    "QueueConfig",
    "QuotasConfig",
    "RateLimitConfig",
    "SecretsConfig",
    "ServerConfig",
    "ServiceEnvironment",
    "StorageConfig",
    "StripeConfig",
    "TlsConfig",
    "WebhooksConfig",
    "WorkersConfig",
    "child_environment",
    "env_name",
    "iter_settings",
    "load_config",
    "service_environment",
    "setting",
]

ENV_PREFIX = "EDGE_NODE_"
CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


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
    quotas: QuotasConfig = field(
        default_factory=QuotasConfig,
        metadata={"doc": "Usage allowances per billing period, per plan (docs/quotas.md)."},
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
    config: Config = _expand_credentials(build(Config, raw, ""), env, "")
    if not config.node_id:
        config = dataclasses.replace(config, node_id=_default_node_id())
    if not NODE_ID_PATTERN.match(config.node_id):
        raise ConfigError(
            f"node_id must be 1-63 letters, digits, '.', '_' or '-', got {config.node_id!r}"
        )
    quotas = config.quotas
    if quotas.lease_interval_seconds * 4 > quotas.lease_seconds:
        # A lease is renewed once less than half of it is left, and a run may be late.
        raise ConfigError(
            f"quotas.lease_interval_seconds ({quotas.lease_interval_seconds}) must be at most a"
            f" quarter of quotas.lease_seconds ({quotas.lease_seconds}), or leases lapse"
            " between renewals"
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
            _set_dotted(raw, key, EnvText(value))


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


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
