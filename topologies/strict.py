"""Strict file formats: a pydantic base model that forbids unknown keys and coerces nothing, and the one-line
error that names the file, the key and the value at fault (the contract of every loader: exit status 2).

Topology, profile, trace-row and run-spec models derive from `StrictModel`; `JSON Schema` for editors comes
from `model_json_schema()`, published under docs/schemas/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """A record of a file format: unknown keys refused, no silent type coercion, immutable once read."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def where(loc: tuple[int | str, ...]) -> str:
    """Returns a location as `a.b[2].c`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def one_line(source: str | Path, exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Returns the first error of `exc` as one line: `<source>: <key path>: <what is wrong> (got <value>)`."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    value = err.get("input")
    if err.get("type") == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1]) if model is not None else []
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{source}: {where(loc)}: unknown key{hint}"
    if err.get("type") == "missing":
        return f"{source}: {where(loc[:-1])}: missing required key {loc[-1]!r}" if loc else f"{source}: missing"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{source}: {where(loc)}: {err.get('msg', 'invalid')} (got {shown})"


def validate(model: type[M], data: Any, source: str | Path, error: type[Exception] = ValueError) -> M:
    """Returns `data` validated as `model`; raises `error` with the one-line message otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(source, exc, model)) from None


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Returns the field names of the (nested) model at `loc`, where it can be followed; else []."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return []


def _model_in(annotation: Any) -> Any:
    """Returns the BaseModel inside an annotation such as `X`, `list[X]`, `dict[str, X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
