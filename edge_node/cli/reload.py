"""SIGHUP: re-read every secret, the TLS certificate, the JWT keys and the reloadable settings.

What a reload applies without a restart (`RELOADABLE`):
- the contents of every secret file (webhook signing secrets, the Stripe API key);
- `tls.cert_file` and `tls.key_file` (files and paths) when TLS was on at start: connections
  opened afterwards get the new certificate;
- `auth.jwt.*`: key files re-read, keys, issuer, audience and leeway as now configured;
- `rate_limit.per_minute`, the default of tenants without a limit of their own.

The configuration file and environment are read again for those settings; any other setting
that changed is logged as needing a restart and left as it was. A reload that fails (a file
that does not parse or load) keeps everything as it was and logs why: the node keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_node.admission.router import TenantRouter
from edge_node.admission.tokens import TokenVerifier, load_keys
from edge_node.config import Config, iter_settings
from edge_node.errors import ConfigError
from edge_node.secrets import SecretFiles
from edge_node.web.tls import ReloadableTls

log = logging.getLogger(__name__)

RELOADABLE = ("tls.cert_file", "tls.key_file", "auth.jwt.", "rate_limit.per_minute")


@dataclass
class NodeReloader:
    """Applies a SIGHUP to the parts of a running node that can change in place."""

    config: Config
    secrets: SecretFiles
    load_config: Callable[[], Config] | None = None
    router: TenantRouter | None = None
    tls: ReloadableTls | None = None
    reloads: int = field(default=0, init=False)

    def reload(self) -> bool:
        """One SIGHUP; False when something could not be reloaded (and was kept as it was)."""
        self.reloads += 1
        ok = self.secrets.reload()
        try:
            fresh = self.load_config() if self.load_config is not None else self.config
        except ConfigError as exc:
            log.error("SIGHUP: the configuration does not load, nothing of it reloaded: %s", exc)
            return False
        ok = self._apply(fresh) and ok
        outcome = "" if ok else " (with errors, see above)"
        log.info("SIGHUP: reloaded %d secret file(s)%s", len(self.secrets), outcome)
        return ok

    def _apply(self, fresh: Config) -> bool:
        ok = True
        if self.tls is not None and fresh.tls != self.tls.config:
            ok = self.tls.reload(fresh.tls) and ok
        elif self.tls is not None:
            ok = self.tls.reload() and ok
        if self.router is not None:
            ok = self._apply_router(fresh) and ok
        restart = [
            key
            for key in changed_settings(self.config, fresh)
            if not _reloadable(key) or (key.startswith("tls.") and self.tls is None)
        ]
        if restart:
            log.warning("SIGHUP: changed settings that need a restart: %s", ", ".join(restart))
        self.config = fresh
        return ok

    def _apply_router(self, fresh: Config) -> bool:
        assert self.router is not None
        try:
            keys = load_keys(fresh.auth.jwt)
        except ConfigError as exc:
            log.error("SIGHUP: JWT keys kept as they were: %s", exc)
            return False
        # A fresh verifier also forgets the tokens it had verified with keys now gone.
        self.router.verifier = TokenVerifier(keys, fresh.auth.jwt)
        self.router.limiter.default_per_minute = fresh.rate_limit.per_minute
        return True


def changed_settings(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between two configurations."""
    return [key for key, _ in iter_settings() if _value(old, key) != _value(new, key)]


def _reloadable(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in RELOADABLE)


def _value(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
