"""TLS for the listener: a TLS 1.3-only server context whose certificate reloads on SIGHUP.

The listening socket keeps one `ssl.SSLContext`; OpenSSL copies the context's certificate
into each connection when it is accepted, so loading a new chain into the same context
serves it to every connection opened afterwards while open ones keep theirs. A new pair is
first loaded into a scratch context: a bad file (missing, mismatched key) leaves the
certificate being served untouched.
"""

from __future__ import annotations

import logging
import ssl

from edge_node.config import TlsConfig
from edge_node.errors import ConfigError

log = logging.getLogger(__name__)


class ReloadableTls:
    """The server context for `tls.cert_file` and `tls.key_file`."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = _checked(config)
        self.context = _server_context()
        _load(self.context, self.config)

    def reload(self, config: TlsConfig | None = None) -> bool:
        """Load the files (of `config` when given) again; False, logged, if they do not load."""
        candidate = self.config if config is None else config
        try:
            _load(_server_context(), _checked(candidate))
        except ConfigError as exc:
            log.error("TLS: %s; still serving the certificate loaded before", exc)
            return False
        _load(self.context, candidate)
        self.config = candidate
        log.info("TLS: reloaded the certificate from %s", candidate.cert_file)
        return True


def open_tls(config: TlsConfig) -> ReloadableTls | None:
    """The listener's TLS when configured; None for plain HTTP. ConfigError if unusable."""
    return ReloadableTls(config) if config.enabled else None


def _checked(config: TlsConfig) -> TlsConfig:
    if not config.cert_file or not config.key_file:
        raise ConfigError("tls.cert_file and tls.key_file must be set together")
    return config


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load(context: ssl.SSLContext, config: TlsConfig) -> None:
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except FileNotFoundError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from None
    except OSError as exc:  # ssl.SSLError included: not PEM, or the key does not match
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(
            f"tls: cannot load the certificate {config.cert_file} with the key"
            f" {config.key_file}: {reason}"
        ) from None
