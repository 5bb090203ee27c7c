"""docs/configuration.md, generated from the configuration schema (edge_node/config/__init__.py).

    python -m edge_node.config.doc           # rewrite docs/configuration.md
    python -m edge_node.config.doc --check   # exit 1 if it differs from the schema

Every row comes from a `setting(...)` field: its dotted key (`iter_settings`), its type
annotation, its default, the bounds and pattern in its metadata, its environment variable
(`env_name`) and its doc text. Nothing in the page is written by hand but the introduction.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from edge_node.config import Config, env_name, iter_settings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
REGENERATE = "python -m edge_node.config.doc"

INTRODUCTION = f"""# Configuration

<!-- Generated from edge_node/config/ by `{REGENERATE}`: edit the schema, not this page. -->

Every setting is optional; a node with none set serves standalone on 127.0.0.1:8080 with its
data in `./var`. Settings come, each overriding the one before, from the defaults below, the
TOML file given with `--config FILE` (`config/edge-node.example.toml` shows them all), the
environment, and the command line (`--data-dir`, `serve --host`, `serve --port`).

- **Environment variables** are `EDGE_NODE_` followed by the dotted key in upper case with
  dots as underscores. Their text is converted to the setting's type (`true`/`false`,
  `1`/`0`, `yes`/`no`, `on`/`off` for booleans); a list is a JSON array, a list of tables a
  JSON array of objects.
- **Secrets** are never values: settings ending in `_file` name a file holding the secret.
  A value starting with `$CREDENTIALS_DIRECTORY/` names a systemd credential
  (`LoadCredential=`) and is expanded to the directory systemd gives the service.
- **Errors**: an unknown key, a value of the wrong type or out of its bounds stops every
  command with exit status 78 and a message naming the key.
"""


def render() -> str:
    """The whole page, from the schema as it is now."""
    parts = [INTRODUCTION]
    for section, doc, keys in _sections():
        title = f"`[{section}]`" if section else "Top level"
        parts.append(f"\n## {title}\n\n{doc}\n\n" if doc else f"\n## {title}\n\n")
        parts.append("| key | type | default | bounds | environment variable | meaning |\n")
        parts.append("| --- | --- | --- | --- | --- | --- |\n")
        parts.extend(_row(dotted, field, kind, env_name(dotted)) for dotted, field, kind in keys)
        for dotted, _, kind in keys:
            item = _table_item(kind)
            if item is not None:
                parts.append(_list_of_tables(dotted, item))
    return "".join(parts)


Leaf = tuple[str, "dataclasses.Field[Any]", Any]


def _sections() -> Iterator[tuple[str, str, list[Leaf]]]:
    """(table key, table doc, its settings) in schema order, top level first."""
    grouped: dict[str, list[Leaf]] = {}
    for dotted, field in iter_settings():
        section = dotted.rpartition(".")[0]
        grouped.setdefault(section, []).append((dotted, field, _annotation(dotted)))
    for section, keys in grouped.items():
        yield section, _section_doc(section), keys


def _annotation(dotted: str) -> Any:
    """The resolved type of the setting at `dotted`."""
    owner: Any = Config
    *parents, leaf = dotted.split(".")
    for part in parents:
        owner = typing.get_type_hints(owner)[part]
    return typing.get_type_hints(owner)[leaf]


def _section_doc(section: str) -> str:
    if not section:
        return ""
    owner: Any = Config
    *parents, leaf = section.split(".")
    for part in parents:
        owner = typing.get_type_hints(owner)[part]
    field = next(f for f in dataclasses.fields(owner) if f.name == leaf)
    return str(field.metadata.get("doc", ""))


def _row(dotted: str, field: dataclasses.Field[Any], kind: Any, env: str) -> str:
    cells = (
        f"`{dotted}`",
        _type_name(kind),
        _default(field),
        _bounds(field),
        f"`{env}`",
        str(field.metadata.get("doc", "")),
    )
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def _list_of_tables(dotted: str, item: type[Any]) -> str:
    """The keys of each table in a list of tables (`auth.jwt.keys`)."""
    lines = [
        f"\nEach table of `{dotted}` (`[[{dotted}]]` in TOML) has these keys:\n\n",
        "| key | type | default | bounds | meaning |\n",
        "| --- | --- | --- | --- | --- |\n",
    ]
    hints = typing.get_type_hints(item)
    for field in dataclasses.fields(item):
        kind = hints[field.name]
        cells = (
            f"`{field.name}`",
            _type_name(kind),
            _default(field),
            _bounds(field),
            str(field.metadata.get("doc", "")),
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n")
    return "".join(lines)


def _table_item(kind: Any) -> type[Any] | None:
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if dataclasses.is_dataclass(item) and isinstance(item, type):
            return item
    return None


_SCALAR_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(f"`{_toml(choice)}`" for choice in typing.get_args(kind))
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if _table_item(kind) is not None:
            return "list of tables"
        return f"list of {_SCALAR_NAMES[item]}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(kind))
    return _SCALAR_NAMES.get(kind, str(kind))


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:  # pragma: no cover - every setting has a default
        return ""
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    """A value as it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _bounds(field: dataclasses.Field[Any]) -> str:
    minimum, maximum = field.metadata.get("minimum"), field.metadata.get("maximum")
    pattern = field.metadata.get("pattern")
    shown = [_number(bound) for bound in (minimum, maximum)]
    if minimum is not None and maximum is not None:
        text = f"{shown[0]} to {shown[1]}"
    elif minimum is not None:
        text = f"at least {shown[0]}"
    elif maximum is not None:
        text = f"at most {shown[1]}"
    else:
        text = ""
    if pattern is not None:
        text = (text + ", " if text else "") + f"matches `{pattern.pattern}`"
    return text


def _number(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DOC_PATH, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != page:
            print(f"{args.output} differs from the schema: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
