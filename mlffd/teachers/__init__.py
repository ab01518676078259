"""Teachers: reference calculators chosen by a spec string, one thin adapter per package.

``load_teacher("sevennet:7net-0")`` returns an ASE calculator; ``teacher_info(spec)`` returns
its provenance (spec, package versions, checkpoint path and sha256). Adapters are imported
lazily, so a missing optional package only matters when its prefix is used.

Specs:

- ``orb:NAME`` (Orb v3 names from orb-models' pretrained registry), ``orb:NAME@/path/to.ckpt``
  for a local checkpoint; ``$MLFFD_ORB_CHECKPOINT_DIR/NAME.ckpt`` is used when it exists.
- ``sevennet:NAME`` (``7net-0`` ships inside the ``sevenn`` wheel), ``sevennet:NAME@/path.pth``.
- ``chgnet`` / ``chgnet:VERSION`` (optional package).
- ``emt`` (ASE's EMT, for fast tests).
- ``xtb`` / ``xtb:GFN2-xTB`` (``GFN1-xTB``, ``IPEA1-xTB``): tblite's tight binding, the ``xtb``
  extra; the molecular teacher that runs offline.
- ``ase:MODULE:CLASS?key=value&...``: any installed ASE calculator class with JSON-literal
  arguments (:mod:`mlffd.teachers.ase_class`; nothing in the spec is evaluated).
- an ASE ``Calculator`` object is returned unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any

from ase.calculators.calculator import BaseCalculator

from mlffd.teachers._common import TeacherSpec, package_versions, parse_spec

__all__ = ["KNOWN_PREFIXES", "TeacherSpec", "canonical_spec", "load_teacher", "parse_spec", "teacher_info"]

#: spec prefix -> adapter module inside mlffd.teachers
_ADAPTERS: dict[str, str] = {
    "orb": "mlffd.teachers.orb",
    "sevennet": "mlffd.teachers.sevennet",
    "chgnet": "mlffd.teachers.chgnet",
    "emt": "mlffd.teachers.emt",
    "xtb": "mlffd.teachers.xtb",
    "ase": "mlffd.teachers.ase_class",
}
KNOWN_PREFIXES: tuple[str, ...] = tuple(_ADAPTERS)


def _adapter(spec: TeacherSpec):
    if spec.prefix not in _ADAPTERS:
        raise ValueError(
            f"unknown teacher spec {spec.raw!r}: prefix {spec.prefix!r} is not one of "
            f"{', '.join(KNOWN_PREFIXES)} (e.g. 'orb:orb-v3-conservative-inf-omat', 'sevennet:7net-0', "
            "'chgnet', 'emt', 'xtb', 'ase:ase.calculators.lj:LennardJones'), and it is not an ASE Calculator object"
        )
    return importlib.import_module(_ADAPTERS[spec.prefix])


def load_teacher(spec: str | BaseCalculator, device: str = "cpu", **kwargs: Any) -> BaseCalculator:
    """An ASE calculator for ``spec`` (a spec string or an ASE Calculator, returned unchanged)."""
    if isinstance(spec, BaseCalculator):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"teacher must be a spec string or an ASE Calculator, got {type(spec).__name__}")
    parsed = parse_spec(spec)
    return _adapter(parsed).load(parsed, device=device, **kwargs)


def canonical_spec(spec: str) -> str:
    """One spelling of a teacher spec (``xtb`` and ``xtb:gfn2-xtb`` are ``xtb:GFN2-xTB``; an
    ``ase:`` spec's arguments sorted), without loading anything: how the data's teacher and a
    config's are compared."""
    parsed = parse_spec(spec)
    canonical = getattr(_adapter(parsed), "canonical", None)
    return canonical(parsed) if canonical is not None else parsed.raw


def teacher_info(spec: str | BaseCalculator) -> dict[str, Any]:
    """Provenance of a teacher: spec, package versions, checkpoint path and sha256 (when a file is used)."""
    if isinstance(spec, BaseCalculator):
        cls = type(spec)
        info: dict[str, Any] = {
            "spec": f"ase-calculator:{cls.__module__}.{cls.__qualname__}",
            "versions": package_versions(["ase", "numpy"]),
            "checkpoint": None,
            "checkpoint_sha256": None,
        }
        # our adapters attach their provenance to the calculators they build
        extra = getattr(spec, "mlffd_teacher_info", None)
        if isinstance(extra, dict):
            info.update(extra)
        return info
    parsed = parse_spec(spec)
    return _adapter(parsed).info(parsed)
