"""Raw settings, from TOML or the environment, built into the configuration's dataclasses.

Each value is converted to its field's declared type (a section, a list, one of a Literal's
choices, a bool, int, float or str) and checked against the bounds its `setting` declares
(edge_node.config.schema), with a message that names the setting and what it must be.
TOML has real numbers and booleans, so a quoted "8080" there is refused; text from the
environment (`EnvText`) is parsed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, TypeVar

from edge_node.errors import ConfigError


class EnvText(str):
    """A value that came from the environment as text, to be converted to the field's type."""

    __slots__ = ()


Built = TypeVar("Built")


def build(cls: type[Built], raw: Any, dotted: str) -> Built:
    """The section `cls` from the table `raw` whose keys start with `dotted` (as messages
    name them); an unknown key is refused, with the nearest known one as a hint."""
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
        return build(kind, value, key + ".")  # type: ignore[arg-type]
    origin = typing.get_origin(kind)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if dataclasses.is_dataclass(item_kind):
            return tuple(build(item_kind, v, f"{key}[{i}].") for i, v in enumerate(value))  # type: ignore[arg-type]
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
    if isinstance(value, EnvText):
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
