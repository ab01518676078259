"""Type checks for config dataclasses read from YAML or TOML: a value of the wrong type is a
ValueError that names the key and what was expected, at load time, instead of a TypeError deep
inside a run (``lr: fast``, ``batch_size: 2.5``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def expected(value: Any, hint: Any) -> str | None:
    """None when ``value`` fits the annotation ``hint``, else what was expected (for a message).

    Floats must be finite; ints must be ints (not bools, not 2.5); tuples may be lists.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        wanted = [a for a in args if a is not type(None)]
        for a in wanted:
            if expected(value, a) is None:
                return None
        texts = [expected_text(a) for a in wanted] + (["null"] if type(None) in args else [])
        return " or ".join(texts)
    if hint is float:
        return None if _is_number(value) and math.isfinite(value) else "a finite number"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return expected_text(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return None if all(expected(v, args[0]) is None for v in value) else expected_text(hint)
        if len(value) != len(args) or any(expected(v, a) is not None for v, a in zip(value, args)):
            return expected_text(hint)
        return None
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return None if isinstance(value, Mapping) else "a mapping"
    if isinstance(hint, type):
        return None if isinstance(value, hint) else f"a {hint.__name__}"
    return None


def expected_text(hint: Any) -> str:
    """A short English description of an annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float:
        return "a finite number"
    if hint is int:
        return "an integer"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0]) if len(set(args)) == 1 else 'values'}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(expected_text(a) if a is not type(None) else "null" for a in args)
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {float: "numbers", int: "integers", str: "strings", bool: "booleans"}.get(hint, "values")


def coerce_numbers(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with numeric strings turned into floats for the float fields of ``cls``.

    YAML 1.1 reads ``1e-3`` (no dot) as a string; such a value is meant as a number. Strings that
    are not numbers stay as they are and fail :func:`check_types` with the key's name.
    """
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for key, value in data.items():
        hint = hints.get(key)
        floats = hint is float or (typing.get_origin(hint) in (typing.Union, types.UnionType) and float in typing.get_args(hint))
        if floats and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[key] = number
    return out


def check_types(obj: Any, where: str = "") -> None:
    """ValueError naming the first field of the dataclass ``obj`` whose value does not fit its
    annotation (``where`` prefixes the message, e.g. ``"task 'md': "``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        problem = expected(value, hints[f.name])
        if problem is not None:
            raise ValueError(f"{where}{f.name}: expected {problem}, got {value!r}")


__all__ = ["check_types", "coerce_numbers", "expected", "expected_text"]
