"""``--set key=value`` overrides of nested config dataclasses, checked against the fields."""

from __future__ import annotations

import dataclasses
import types
import typing


def _field_type(cls, name):
    return typing.get_type_hints(cls)[name]


def _parse(value: str, typ, key: str):
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # e.g. float | None
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return _parse(value, args[0], key)
    if origin is tuple:
        args = typing.get_args(typ)
        parts = [p for p in value.strip("()[] ").split(",") if p.strip()]
        item = args[0] if args else str
        return tuple(_parse(p.strip(), item, key) for p in parts)
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ in (int, float, str):
            return typ(value)
    except ValueError:
        raise ValueError(f"--set {key}={value}: expected a {typ.__name__}") from None
    raise ValueError(f"--set {key}: fields of type {typ} cannot be set from the command line")


def apply_overrides(cfg, assignments: list[str]):
    """Return a copy of ``cfg`` with each ``a.b.c=value`` applied (types from the fields)."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), value.strip(), key.strip())
    return cfg


def _set(obj, path, value, key):
    names = [f.name for f in dataclasses.fields(obj)]
    if path[0] not in names:
        raise ValueError(
            f"--set {key}: unknown field {path[0]!r} in {type(obj).__name__}; "
            f"valid fields: {', '.join(names)}"
        )
    current = getattr(obj, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"--set {key}: {path[0]!r} is a value, not a group of fields")
        new = _set(current, path[1:], value, key)
    else:
        if dataclasses.is_dataclass(current):
            raise ValueError(f"--set {key}: {path[0]!r} is a group; set one of its fields")
        new = _parse(value, _field_type(type(obj), path[0]), key)
    return dataclasses.replace(obj, **{path[0]: new})


def from_dict(cls, d: dict, source: str = "<dict>"):
    """A config dataclass ``cls`` from its ``dataclasses.asdict`` / JSON form (nested groups
    rebuilt, JSON lists back to tuples); a ValueError names unknown fields."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a dict for {cls.__name__}, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{source}: {cls.__name__} has no fields {unknown} (this code's "
                         f"fields: {sorted(fields)}); it was written by other code")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            value = from_dict(typ, value, source)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
