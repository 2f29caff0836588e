"""Configuration as frozen dataclasses: TOML files and `field=value` overrides.

One helper serves every config in the project: nested dataclasses are addressed with
dots (`model.causal=false`), values are parsed by the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from seld import SeldError

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """A plain dict (JSON/TOML-able) of a dataclass, tuples as lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """Build `cls` from a plain dict; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise SeldError(f"{source}: expected a table of {cls.__name__} fields, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SeldError(f"{source}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{source}: {name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise SeldError(f"{source}: {error}") from None


def apply_overrides(config: T, overrides: list[str] | dict[str, Any], source: str = "command line") -> T:
    """Apply `a.b=value` overrides (strings parsed by type) or a nested dict of values.

    All overrides of one dataclass are applied together, so fields that are only valid
    together (`model.causal=false model.attention_window=0`) can change in one go."""
    if isinstance(overrides, dict):
        items = list(_flatten(overrides))
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise SeldError(f"{source}: override {item!r} is not field=value")
            key, value = item.split("=", 1)
            items.append((key.strip(), value.strip()))
    nested: dict = {}
    for key, value in items:
        *parents, name = key.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise SeldError(f"{source}: {key} sets a field inside a value")
        target[name] = value
    return _replace(config, nested, source, "")


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SeldError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SeldError(f"{path}: not valid TOML: {error}") from None


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _replace(config: Any, changes: dict, source: str, prefix: str) -> Any:
    fields = {f.name for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    values = {}
    for name, value in changes.items():
        if name not in fields:
            raise SeldError(f"{source}: {type(config).__name__} has no field {prefix + name!r} "
                            f"(fields: {', '.join(sorted(fields))})")
        current = getattr(config, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            values[name] = _replace(current, value, source, f"{prefix}{name}.")
        else:
            values[name] = _coerce(hints[name], value, f"{source}: {prefix}{name}")
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as error:
        raise SeldError(f"{source}: {error}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Turn `value` (a string from the command line, or a TOML value) into type `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        for option in options:
            try:
                return _coerce(option, value, where)
            except SeldError:
                continue
        raise SeldError(f"{where}: cannot read {value!r} as {hint}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return from_dict(hint, value, where)
        raise SeldError(f"{where}: expected a table of fields")
    if origin in (tuple, list):
        if isinstance(value, dict):  # its keys would pass for the items
            raise SeldError(f"{where}: cannot read a table as a list")
        if isinstance(value, str):
            value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where) if inner is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):  # 5 is no truth value
                raise ValueError(value)
            return value
        if hint in (int, float) and isinstance(value, bool):  # learning_rate = true trained at 1.0
            raise ValueError(value)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return hint(value)
    except (TypeError, ValueError):
        raise SeldError(f"{where}: cannot read {value!r} as {hint.__name__}") from None
    return value
