"""Identifier formats shared across the node: tenants and ratings are canonical lower-case UUIDs."""

from __future__ import annotations

import re

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value: str) -> bool:
    return UUID_PATTERN.match(value) is not None
