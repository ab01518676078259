"""Any installed ASE calculator class as a teacher: ``ase:MODULE:CLASS`` with keyword arguments
after ``?``, e.g. ``ase:ase.calculators.lj:LennardJones?sigma=2.1&epsilon=0.0103&rc=6.0``.

Only an installed, importable module is named (a dotted module path, never a file), the class must
be an ASE calculator, and every argument value is read as a JSON literal (number, true/false,
null, string, list) or else taken as a plain string: nothing in the spec is evaluated as code.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from ase.calculators.calculator import BaseCalculator

from mlffd.teachers._common import TeacherSpec, package_versions

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


def _parse(spec: TeacherSpec) -> tuple[str, str, dict[str, Any]]:
    """Module, class and keyword arguments of an ``ase:`` spec (its name part)."""
    # parse_spec split "ase:MOD:CLASS?K=V@..." at the first ':' and at '@'; an ASE spec has no
    # file part, so an '@' belongs to an argument value: put it back
    body = (spec.name or "") + (f"@{spec.path}" if spec.path else "")
    target, _, query = body.partition("?")
    module, _, cls = target.rpartition(":")
    if not _MODULE.match(module) or not _NAME.match(cls):
        raise ValueError(f"teacher spec {spec.raw!r}: expected 'ase:package.module:CalculatorClass' (an installed module, "
                         "e.g. 'ase:ase.calculators.lj:LennardJones'), optionally followed by '?key=value&...'")
    kwargs: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, raw = item.partition("=")
        if not eq or not _NAME.match(key.strip()):
            raise ValueError(f"teacher spec {spec.raw!r}: argument {item!r} is not 'name=value'")
        try:
            kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key.strip()] = raw  # a bare word is a string
    return module, cls, kwargs


def _class(spec: TeacherSpec) -> type:
    module_name, cls_name, _ = _parse(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"teacher spec {spec.raw!r}: cannot import {module_name!r} ({exc})") from exc
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCalculator)):
        raise ValueError(f"teacher spec {spec.raw!r}: {module_name}.{cls_name} is not an ASE calculator class")
    return cls


def load(spec: TeacherSpec, device: str = "cpu", **kwargs: Any):
    """An instance of the spec's class with its arguments (``kwargs`` add to them; ``device`` is
    passed only to classes whose constructor names it)."""
    import inspect

    cls = _class(spec)
    arguments = {**_parse(spec)[2], **kwargs}
    named = {n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    # ASE calculators take **kwargs and store unknown keys silently: check against what the
    # class declares (its constructor's names and its default_parameters)
    known = named | set(getattr(cls, "default_parameters", {}) or {})
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(f"teacher spec {spec.raw!r}: {cls.__name__} does not take these arguments {unknown}; "
                         f"it knows {sorted(known - {'self'})}")
    if "device" in named:
        arguments.setdefault("device", device)
    try:
        calc = cls(**arguments)
    except TypeError as exc:
        raise ValueError(f"teacher spec {spec.raw!r}: {cls.__name__} does not take these arguments ({exc})") from exc
    calc.mlffd_teacher_info = info(spec)
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    return {"spec": canonical(spec), "versions": package_versions(["ase", _parse(spec)[0].split(".")[0]]),
            "checkpoint": None, "checkpoint_sha256": None}


def canonical(spec: TeacherSpec) -> str:
    module, cls, kwargs = _parse(spec)
    # 6 and 6.0 are the same argument
    kwargs = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in kwargs.items()}
    query = "&".join(f"{k}={json.dumps(v)}" for k, v in sorted(kwargs.items()))
    return f"ase:{module}:{cls}" + (f"?{query}" if query else "")
