"""ASE's EMT as a teacher (``emt``): instant, for tests and examples (Al, Cu, Ag, Au, Ni, Pd, Pt, H, C, N, O)."""

from __future__ import annotations

from typing import Any

from mlffd.teachers._common import TeacherSpec, package_versions


def load(spec: TeacherSpec, device: str = "cpu", **kwargs: Any):
    """ASE EMT calculator (``device`` is ignored)."""
    from ase.calculators.emt import EMT

    calc = EMT(**kwargs)
    calc.mlffd_teacher_info = info(spec)
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    if spec.name or spec.path:
        raise ValueError(f"teacher spec {spec.raw!r}: 'emt' takes no model name or checkpoint")
    return {"spec": "emt", "versions": package_versions(["ase"]), "checkpoint": None, "checkpoint_sha256": None}
