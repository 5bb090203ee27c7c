"""Logs: one JSON object per line, carrying the id of the request being served, secrets masked.

`configure_logging` is called once, when `edge-node serve` starts, with `logging.level`.
Every record becomes `{"time", "level", "logger", "message", ...}`: fields passed with
`extra=` are kept, an exception's traceback goes in `exception`, and a record logged while a
request is served carries its `request_id` (set by `edge_node.web.request_ids`). No code logs a
credential; as a second line of defence anything shaped like one (an API key's secret part,
a JWT, a webhook signing secret, a Stripe key, a DSN's password) is masked before writing.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("edge_node_request_id", default=None)
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MASK = "<redacted>"
# Libraries that log every call at info: heard from only at debug, or when something is wrong.
CHATTY_LOGGERS = ("stripe",)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"}
)
_SECRETS = re.compile(
    r"(?P<key>\benk_[A-Za-z0-9]{16}_)[A-Za-z0-9_-]+"  # API key: keep the key id
    r"|\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # a JWT (header starts {")
    r"|\bwhsec_[A-Za-z0-9+/=_-]+"  # Stripe webhook signing secret
    r"|\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9_]+"  # Stripe secret and restricted keys
    r"|(?P<dsn>postgres(?:ql)?://[^:/@\s\"]+:)[^@\s\"]+(?=@)"  # a DSN's password
)


def mask_secrets(text: str) -> str:
    """`text` with every credential-shaped substring replaced by <redacted>."""
    return _SECRETS.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    return (match.group("key") or match.group("dsn") or "") + MASK


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            document["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        line = orjson.dumps(document, default=str).decode()
        return mask_secrets(line)


class _EdgeNodeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs, told apart from any other on the root logger."""


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every log record, at `level` and above, as JSON lines to `stream` (stderr).

    The Stripe SDK's per-call lines are written only at debug. Calling it again replaces the
    handler it installed before, not any other.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _EdgeNodeHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _EdgeNodeHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.captureWarnings(True)
