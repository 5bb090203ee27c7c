"""Secrets read from files, reloaded without a restart when the file changes or on SIGHUP.

A secret (a Stripe webhook signing secret, the Stripe API key) lives in a file or a systemd
credential, never in the configuration. `SecretFile` reads it at start, where a missing,
unreadable or empty file is a configuration error. Afterwards the file is re-read when its
identity (mtime, ctime, size, inode) changes, checked at most once per `check_interval` when
the secret is used, and whenever `reload()` is called (the daemon calls it on SIGHUP). A
reload that fails keeps the value already loaded and logs an error, so a botched rotation
never takes the node down; a caller holding the old value finishes with it undisturbed.

Values are never logged or shown in a repr.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_node.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL_SECONDS = 1.0
MAX_SECRET_BYTES = 65536

_Identity = tuple[int, int, int, int]


class SecretUnreadable(Exception):
    """The secret file could not be read, or holds nothing usable."""


class SecretFile:
    """One secret held in a file: `value()` is the current secret, re-read when the file changes.

    `check_interval` 0 checks the file on every use; None never does (SIGHUP-only reloads).
    `allow_empty` lets an empty file mean "no secret" (value ""), for an optional secret such
    as the previous webhook secret once a rotation is over.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        check_interval: float | None = DEFAULT_CHECK_INTERVAL_SECONDS,
        allow_empty: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.name = name or str(self.path)
        self._check_interval = check_interval
        self._allow_empty = allow_empty
        self._clock = clock
        try:
            self._value, self._identity = _read(self.path, allow_empty)
        except SecretUnreadable as exc:
            raise ConfigError(f"{self.name}: {exc}") from None
        self._checked_at = clock()
        self._failing = False

    def __repr__(self) -> str:
        return f"SecretFile({str(self.path)!r})"

    def value(self) -> str:
        """The secret, after re-reading the file if it changed since the last check."""
        if self._check_interval is not None:
            now = self._clock()
            if now - self._checked_at >= self._check_interval:
                self._checked_at = now
                self._reload_if_changed()
        return self._value

    def reload(self) -> bool:
        """Re-read the file now; on failure keep the current secret, log, and return False."""
        try:
            value, identity = _read(self.path, self._allow_empty)
        except SecretUnreadable as exc:
            self._report_failure(exc)
            return False
        changed = value != self._value
        self._value, self._identity = value, identity
        if self._failing:
            log.warning("%s is readable again", self.name)
            self._failing = False
        if changed:
            log.info("%s reloaded from %s: the secret changed", self.name, self.path)
        return True

    def _reload_if_changed(self) -> None:
        try:
            identity = _identity(os.stat(self.path))
        except OSError as exc:
            self._report_failure(SecretUnreadable(f"cannot read {self.path}: {exc.strerror}"))
            return
        if identity != self._identity or self._failing:
            self.reload()

    def _report_failure(self, exc: SecretUnreadable) -> None:
        # Logged once per failure, not on every use: a missing file must not flood the log.
        if not self._failing:
            log.error("%s: %s; keeping the secret loaded before", self.name, exc)
            self._failing = True


class SecretFiles:
    """Every secret file the node reads, so one SIGHUP reloads them all."""

    def __init__(self, *, check_interval: float | None = DEFAULT_CHECK_INTERVAL_SECONDS) -> None:
        self.check_interval = check_interval
        self._files: dict[Path, SecretFile] = {}

    def open(
        self, path: str | os.PathLike[str], *, name: str | None = None, allow_empty: bool = False
    ) -> SecretFile:
        """The secret in `path`, read now (ConfigError if it cannot be); one object per path."""
        key = Path(path).absolute()
        secret = self._files.get(key)
        if secret is None:
            secret = SecretFile(
                path, name=name, check_interval=self.check_interval, allow_empty=allow_empty
            )
            self._files[key] = secret
        return secret

    def reload(self) -> bool:
        """Re-read every file (SIGHUP); False when any kept its old secret."""
        results = [secret.reload() for secret in self._files.values()]
        return all(results)

    def __iter__(self) -> Iterator[SecretFile]:
        return iter(self._files.values())

    def __len__(self) -> int:
        return len(self._files)


def _read(path: Path, allow_empty: bool) -> tuple[str, _Identity]:
    try:
        with path.open("rb") as handle:
            identity = _identity(os.fstat(handle.fileno()))
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretUnreadable(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretUnreadable(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a secret")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretUnreadable(f"{path} is not UTF-8 text") from None
    if not value and not allow_empty:
        raise SecretUnreadable(f"{path} is empty")
    return value, identity


def _identity(stat: os.stat_result) -> _Identity:
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
