"""Command-line options generated from a dataclass, as CleanRL's `Args`: a field declared with `opt(...)` is
one argparse option whose help is the field's docstring (its first paragraph), so an option is written once,
in the dataclass, and read back into it by `option_values`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEY = "live.options"


@dataclass(frozen=True)
class Option:
    """How one field appears on the command line."""

    flag: str | None = None
    """The option's name (default: `--` and the field's name with dashes)."""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    """Turns the option's text into the field's value (default: the field's type)."""
    repeat: bool = False
    """The option may be given many times: the field is the tuple of their values."""
    default_text: str | None = None
    """What the help says the default is (None: the field's default; "": nothing, the docstring says it)."""
    external: bool = False
    """Another parser adds this option (its dest is still the field's name): skipped here."""
    help_flag: str | None = None
    """The help of a flag that turns a True field off (`--no-...`), which the field's docstring does not say."""


def opt(default: Any, flag: str | None = None, **how: Any) -> Any:
    """Returns a dataclass field with `default` that is a command-line option (see `Option`)."""
    return dataclasses.field(default=default, metadata={_KEY: Option(flag, **how)})


def field_docs(cls: type) -> dict[str, str]:
    """Returns {field: its docstring} of a dataclass, from its source (the string under each field)."""
    tree = ast.parse(inspect.getsource(cls))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)).body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _base_type(annotation: Any) -> Any:
    """Returns the type an option's text is parsed as: `X` of `X` or `X | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def options(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """Returns the fields of a dataclass that are options, in declaration order."""
    return [(f, f.metadata[_KEY]) for f in dataclasses.fields(cls) if _KEY in f.metadata]


def add_options(parser: argparse.ArgumentParser, cls: type, external: Callable[[], None] | None = None) -> None:
    """Adds an option per `opt` field of `cls` (dest: the field's name); calls `external` where the first
    field another parser adds would go."""
    docs, hints, external_done = field_docs(cls), typing.get_type_hints(cls), False
    for f, o in options(cls):
        if o.external:
            if external is not None and not external_done:
                external()
                external_done = True
            continue
        doc = docs.get(f.name, "")
        text = " ".join(doc.split("\n\n")[0].split())
        shown = o.default_text if o.default_text is not None else (
            "" if f.default is None or f.default == () or isinstance(f.default, bool) else _shown(f.default))
        help_text = (text + (f" (default {shown})" if shown else "")).replace("%", "%%")
        flag = o.flag or "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            action = "store_false" if f.default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action,
                                help=help_text if o.help_flag is None else o.help_flag.replace("%", "%%"))
            continue
        kind = o.parse or _base_type(hints[f.name])
        if kind is Path or kind in (str, int, float):
            pass
        elif o.parse is None:
            raise TypeError(f"{cls.__name__}.{f.name}: give opt(parse=...) for a {kind}")
        parser.add_argument(
            flag, dest=f.name, type=kind, metavar=o.metavar, choices=o.choices, help=help_text,
            **({"action": "append", "default": None} if o.repeat else {"default": f.default}),
        )


def option_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Returns {field: value} of every option `add_options` added, as parsed (repeated ones as tuples)."""
    values = {}
    for f, o in options(cls):
        if not o.external:
            value = getattr(args, f.name)
            values[f.name] = tuple(value or ()) if o.repeat else value
    return values
