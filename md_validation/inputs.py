"""What a validation runs on: the student, the teacher and the starting structure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

#: teacher spec prefix for an mlffd artifact used as the reference (``model:PATH`` or ``model:NAME``)
MODEL_PREFIX = "model:"


def default_structure() -> Atoms:
    """The built-in start: 64-atom diamond silicon (2×2×2 conventional cells, a = 5.43 Å)."""
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)


def load_structure(path: str | Path | None = None, index: int | str = 0) -> Atoms:
    """Read frame ``index`` of ``path`` with ``ase.io.read`` (the built-in silicon when ``None``)."""
    if path is None:
        return default_structure()
    from ase.io import read

    atoms = read(str(path), index=index)
    if isinstance(atoms, list):  # pragma: no cover - index slices
        atoms = atoms[0]
    atoms.calc = None
    return atoms


def load_student(model: str | Path | Calculator, device: str = "cpu", dtype: str | None = None) -> Calculator:
    """A shipped model name or artifact path -> :class:`mlffd.DistilledCalculator` (calculators pass through)."""
    if isinstance(model, Calculator):
        return model
    from mlffd import DistilledCalculator

    return DistilledCalculator(model, device=device, dtype=dtype)


def load_teacher(spec: str | Calculator, device: str = "cpu") -> Calculator:
    """A teacher spec -> ASE calculator.

    ``model:PATH`` (or ``model:NAME``) loads an mlffd artifact as the reference; anything else goes
    to ``mlffd.teachers.load_teacher`` (``emt``, ``sevennet:7net-0``, ``orb:NAME``, ...). A
    calculator object passes through unchanged.
    """
    if isinstance(spec, Calculator):
        return spec
    spec = str(spec).strip()
    if spec.startswith(MODEL_PREFIX):
        return load_student(spec[len(MODEL_PREFIX):], device=device)
    try:
        from mlffd.teachers import load_teacher as _load
    except ImportError:
        _load = None
    if _load is None:
        if spec.lower() == "emt":  # the toy teacher works without the teachers package
            from ase.calculators.emt import EMT

            return EMT()
        raise ValueError(f"teacher {spec!r} needs mlffd.teachers, which is not installed; try 'emt' or 'model:PATH'")
    return _load(spec, device=device)


def structure_hash(atoms: Atoms) -> str:
    """sha256 of numbers, positions, cell and pbc (what defines an MD start)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.ascontiguousarray(atoms.positions, dtype=np.float64), 10).tobytes())
    h.update(np.round(np.ascontiguousarray(atoms.cell.array, dtype=np.float64), 10).tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()


def calculator_id(calc: Calculator, hint: str | None = None) -> str:
    """A stable identity of a calculator for cache keys.

    mlffd artifacts are identified by their file's sha256; other calculators by ``hint`` (the
    teacher spec) or their class and parameters.
    """
    artifact = getattr(calc, "artifact", None)
    path = getattr(artifact, "path", None)
    if path is not None and Path(path).exists():
        from mlffd.registry import sha256_file

        dtype = getattr(calc, "dtype", "")
        return f"mlffd:{sha256_file(path)}:{dtype}"
    if hint:
        return hint
    params: Any
    try:
        params = calc.todict()
    except Exception:  # pragma: no cover - exotic calculators
        params = {}
    return f"{type(calc).__module__}.{type(calc).__name__}:{json.dumps(params, sort_keys=True, default=str)}"


def calculator_label(calc: Calculator, hint: str | None = None) -> str:
    """A short human name for reports (artifact file name, teacher spec or class name)."""
    if hint:
        return str(hint)
    artifact = getattr(calc, "artifact", None)
    if artifact is not None and getattr(artifact, "path", None) is not None:
        return Path(artifact.path).name
    return type(calc).__name__


def model_id(model: str | Path) -> str:
    """Identity of an mlffd model (name or path) for cache keys: the artifact's sha256."""
    from mlffd.registry import resolve, sha256_file

    return f"mlffd:{sha256_file(resolve(model))}"
