"""GFN2-xTB (and GFN1-xTB, IPEA1-xTB) through ``tblite`` as a teacher: ``xtb`` or ``xtb:GFN2-xTB``.

The molecular teacher that runs offline here (the ``xtb`` extra installs ``tblite``'s wheel):
a semi-empirical tight-binding method for molecules of H-Rn, periodic systems included.
Energies in eV, forces in eV/Å, stress for periodic cells (ASE conventions, tblite's ASE calculator).
"""

from __future__ import annotations

from typing import Any

from mlffd.teachers._common import TeacherSpec, package_versions

METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")
DEFAULT_METHOD = "GFN2-xTB"


def _method(spec: TeacherSpec) -> str:
    if spec.path:
        raise ValueError(f"teacher spec {spec.raw!r}: 'xtb' takes a method name, not a file")
    name = spec.name or DEFAULT_METHOD
    matches = [m for m in METHODS if m.lower() == name.lower()]
    if not matches:
        raise ValueError(f"teacher spec {spec.raw!r}: unknown xTB method {name!r}; expected one of {', '.join(METHODS)}")
    return matches[0]


def load(spec: TeacherSpec, device: str = "cpu", **kwargs: Any):
    """tblite's ASE calculator for the spec's method (``device`` is ignored: tblite runs on the CPU)."""
    method = _method(spec)
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise ImportError("teacher 'xtb' needs the 'tblite' package: pip install 'mlffd[xtb]' (or make setup)") from exc
    calc = TBLite(method=method, verbosity=0, **kwargs)
    calc.mlffd_teacher_info = info(spec)
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    return {"spec": canonical(spec), "versions": package_versions(["tblite", "ase"]), "checkpoint": None,
            "checkpoint_sha256": None}


def canonical(spec: TeacherSpec) -> str:
    return f"xtb:{_method(spec)}"
