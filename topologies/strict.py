"""Strict file formats: a pydantic base model that forbids unknown keys and coerces nothing, the YAML reader
that refuses duplicate keys, and the one-line error that names the file, the key and the value at fault
(the contract of every loader: exit status 2 from the command line).

Topology, profile, trace-row and run-spec models derive from `StrictModel`; their JSON Schemas, for editors,
are published under docs/schemas/ (`python docs/schemas/generate.py --write`).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema

M = TypeVar("M", bound=BaseModel)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keys users write from habit (Mininet's TCLink, plain English) that lack a unit: say which key is meant.
_UNIT_HINTS = {"delay": "delay_ms", "jitter": "delay_dev_ms", "bw": "bw_mbps", "loss": "loss_pct",
               "bandwidth": "bw_mbps", "cores": "cpu_cores", "memory": "memory_gib"}
_NUMBER_ERRORS = {"float_type", "float_parsing", "int_type", "int_parsing", "int_from_float"}
_PROBLEMS = {
    "float_type": "is not a number", "float_parsing": "is not a number",
    "int_type": "is not a whole number", "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number", "string_type": "is not a string",
    "bool_type": "is not true or false", "finite_number": "must be a finite number",
    "greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}", "less_than": "must be < {lt}",
    "string_too_short": "must not be empty",
}


class StrictModel(BaseModel):
    """A record of a file format: unknown keys refused, no silent type coercion, immutable once read."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _finite(**bounds: float) -> Any:
    return Field(allow_inf_nan=False, **bounds)


NonNegative = Annotated[float, _finite(ge=0)]
"""A finite number >= 0 (an int is taken as a float)."""
Positive = Annotated[float, _finite(gt=0)]
"""A finite number > 0."""
Percent = Annotated[float, _finite(ge=0, le=100)]
"""A percentage: a finite number in [0, 100]."""


def _fraction(value: float) -> float:
    if value > 1:
        raise ValueError("must be between 0 and 1")
    return value


Fraction = Annotated[float, _finite(ge=0), AfterValidator(_fraction),
                     WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
"""A fraction: a finite number in [0, 1]."""


def _whole(value: float) -> int:
    if value != int(value):
        raise ValueError("must be a whole number")
    return int(value)


def whole_number(minimum: int = 0) -> Any:
    """Returns the type of a whole number >= `minimum`; `2.0` is taken as 2 (as JSON Schema's "integer" is)."""
    return Annotated[float, _finite(ge=minimum), AfterValidator(_whole),
                     WithJsonSchema({"type": "integer", "minimum": minimum})]


WholeNumber = whole_number(0)
"""A whole number >= 0."""
NAME_PATTERN = "^[A-Za-z0-9_-]+$"


def _name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError("is not a valid name (letters, digits, '-' and '_')")
    return value


Name = Annotated[str, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})]
"""A name of letters, digits, '-' and '_' (sites, topologies)."""


def derived(description: str) -> Any:
    """Returns the field of an optional key whose default the loader derives from other keys (a layer, a
    device): absent, it reads as None; the schema shows no default (null is not a value the file may give)."""
    return Field(None, description=description, json_schema_extra=_drop_default)


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")
"""pydantic's words for a key the format does not have (a model's, and a stdlib dataclass's)."""


def validate(model: type[M], data: Any, source: str | Path, error: type[Exception] = ValueError) -> M:
    """Returns `data` validated as `model`; raises `error` with the one-line message otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(source, exc, model)) from None


def one_line(source: str | Path, exc: ValidationError, model: Any = None) -> str:
    """Returns the first error of `exc` as one line: `<source>: <key path>: <value> <what is wrong>`."""
    err = first_error(exc.errors(include_url=False))
    loc = tuple(err.get("loc", ()))
    if err.get("type") in UNKNOWN_KEY:
        return f"{source}: {key_path(loc, model)}: {unknown_key(str(loc[-1]), _allowed_keys(model, loc[:-1]))}"
    if err.get("type") in ("missing", "missing_argument"):
        return f"{source}: {key_path(loc[:-1], model)}: missing required key {loc[-1]!r}" if loc \
            else f"{source}: missing"
    return f"{source}: {key_path(loc, model)}: {problem(err, loc)}"


def at_key(source: str | Path, where: str, message: str) -> str:
    """Returns a check's one-line message in the validators' form: `<source>: <key path>: <what is wrong>`."""
    return f"{source}: {where}: {message}"


def first_error(errors: list[Any]) -> Any:
    """Returns the error a reader checking the file top-down meets first: in each mapping on the way to the
    first error, an unknown key, then a missing key, then the values."""
    loc = tuple(errors[0].get("loc", ()))
    for depth in range(len(loc)):
        for kinds in (UNKNOWN_KEY, ("missing", "missing_argument")):
            for err in errors:
                if err.get("type") in kinds and tuple(err.get("loc", ()))[:-1] == loc[:depth]:
                    return err
    return errors[0]


def problem(err: Mapping[str, Any], loc: tuple = ()) -> str:
    """Returns what is wrong in one pydantic error as `<value> <what is wrong>` (`'5ms' is not a number`)."""
    kind, value, ctx = err.get("type", ""), err.get("input"), err.get("ctx") or {}
    if kind == "json_invalid":
        return f"invalid JSON: {ctx.get('error', err.get('msg', ''))}"
    shown = show(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return f"{shown} {ctx['error']}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{shown} is not one of {', '.join(choices)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {shown}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {shown}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"expected a non-empty {'mapping' if isinstance(value, dict) else 'list'}, got {shown}"
    if kind in ("too_short", "too_long"):
        bound = f"at least {ctx.get('min_length')}" if kind == "too_short" else f"at most {ctx.get('max_length')}"
        return f"expected {bound} entries, got {shown}"
    bounds = {k: f"{v:g}" if isinstance(v, (int, float)) else v for k, v in ctx.items()}
    text = f"{shown} {_PROBLEMS[kind].format(**bounds)}" if kind in _PROBLEMS else f"{shown}: {err.get('msg', 'invalid')}"
    last = str(loc[-1]) if loc else ""
    if kind in _NUMBER_ERRORS and "_" in last:
        text += f" (a plain number in {last.rsplit('_', 1)[-1]}; the unit is in the key)"
    return text


def show(value: Any) -> str:
    """Returns a value as a message shows it: its repr, cut at 60 characters."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def unknown_key(key: str, allowed: list[str]) -> str:
    """Returns `unknown key (did you mean ...?); allowed: ...` for a key not in `allowed`."""
    hint = _UNIT_HINTS.get(key) or next((a for a in allowed if a.startswith(f"{key}_")), None)
    extra = f" (did you mean {hint!r}? units are part of the key)" if hint in allowed else ""
    return f"unknown key{extra}; allowed: {', '.join(allowed)}" if allowed else f"unknown key{extra}"


def key_path(loc: tuple[int | str, ...], model: Any = None) -> str:
    """Returns a location as `a.b[2].c`: list items in brackets, mapping keys (even numbers) after a dot."""
    out = ""
    for part, kind in zip(loc, _kinds(model, loc), strict=True):
        if part == "[key]":
            continue
        out += f"[{part}]" if kind == "item" else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_yaml(path: Path, error: Callable[[str], Exception]) -> Any:
    """Returns the parsed YAML document; an unreadable file, a syntax error or a duplicate key raises `error`
    with one line naming the file, the line and the column."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        try:  # libyaml's parser first (twice as fast on a 10,000-antenna file); Python's words the errors
            return yaml.load(text, Loader=_FastUniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        what = " ".join(str(exc.problem or exc.context or "").split())
        raise error(f"{path}:{where} invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None


def json_schema(model: Any) -> dict[str, Any]:
    """Returns the JSON Schema of a file format (draft 2020-12), without pydantic's generated field titles;
    `model` is a pydantic model or a (pydantic) dataclass."""
    schema = TypeAdapter(model).json_schema(schema_generator=_NoFieldTitles)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


class _NoFieldTitles(GenerateJsonSchema):
    """A schema generator that leaves out the titles pydantic makes from field names ('Delay Ms')."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_FastUniqueKeyLoader: type = _UniqueKeyLoader
if getattr(yaml, "__with_libyaml__", False):
    class _FastUniqueKeyLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        """_UniqueKeyLoader on libyaml's parser."""

    _FastUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _allowed_keys(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """Returns the keys of the (nested) model at `loc`, where it can be followed; else []."""
    current = _walk(model, loc)[-1] if model is not None else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return []


def _kinds(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """Returns per part of `loc` whether it is a list 'item' or a 'key' (of a model or a mapping)."""
    if model is None:
        return ["item" if isinstance(p, int) else "key" for p in loc]
    return ["item" if _origin(t) in (list, tuple) else "key" for t in _walk(model, loc)[:-1]]


def _walk(model: Any, loc: tuple[int | str, ...]) -> list[Any]:
    """Returns the type at each step of `loc` through `model` (the model first; None once lost)."""
    found = [model]
    current = model
    for part in loc:
        current = _strip(current)
        if part == "[key]":
            pass
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif _origin(current) in (list, tuple):
            current = (typing.get_args(current) or (None,))[0]
        elif _origin(current) is dict:
            current = (typing.get_args(current) + (None, None))[1]
        else:
            current = None
        found.append(current)
    return found


def _origin(annotation: Any) -> Any:
    return typing.get_origin(_strip(annotation)) or _strip(annotation)


def _strip(annotation: Any) -> Any:
    """Returns an annotation without `Annotated[...]` and without `| None`."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation
