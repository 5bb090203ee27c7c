"""The `setting` field: a configuration dataclass field with its documentation and bounds."""

from __future__ import annotations

from dataclasses import field
from re import Pattern
from typing import Any


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: Pattern[str] | None = None,
) -> Any:
    """A documented configuration field with optional bounds."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "pattern": pattern}
    if isinstance(default, tuple | list | dict):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)
