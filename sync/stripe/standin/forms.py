"""Stripe's form encoding: `metadata[tenant_id]=t`, `items[0][price]=p` into nested values.

Stripe's v1 API takes `application/x-www-form-urlencoded` bodies (and query strings) whose
keys use bracket notation; a table whose keys are all integers (or empty brackets) is a list.
Values stay strings, as on the wire: each resource converts what it needs.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A key that is not valid bracket notation, or that clashes with another key."""


def decode_form(text: str) -> dict[str, Any]:
    """Nested dicts, lists and strings from an url-encoded form or query string."""
    root: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise FormError(f"invalid parameter name {key!r}")
        path = [match.group(1), *_PART.findall(match.group(2))]
        _assign(root, path, value, key)
    listed: dict[str, Any] = _listify(root)
    return listed


def _assign(node: dict[str, Any], path: list[str], value: str, key: str) -> None:
    for part in path[:-1]:
        # `a[][b]`: empty brackets open the next element of a list
        name = str(sum(1 for k in node if k.isdigit())) if part == "" else part
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise FormError(f"parameter {key!r} clashes with another")
        node = child
    leaf = path[-1]
    if leaf == "":
        leaf = str(sum(1 for k in node if k.isdigit()))
    if isinstance(node.get(leaf), dict):
        raise FormError(f"parameter {key!r} clashes with another")
    node[leaf] = value


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted
