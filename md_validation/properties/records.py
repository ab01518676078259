"""One scored row of the property table: a property, its unit, teacher and student values, the
error, the tolerance and whether it passed (``properties.json`` writes these keys, stably)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PropertyRecord:
    """``error`` is ``student - teacher`` in ``unit`` for absolute tolerances and the relative
    error in % for relative ones (``tolerance_kind``); ``passed`` is ``None`` for rows reported
    without a tolerance (not scored)."""

    section: str
    property: str
    unit: str
    teacher: float | None
    student: float | None
    error: float | None
    tolerance: float | None
    tolerance_kind: str  # "abs", "rel_%" or "flag" (a yes/no check: teacher/student 0 or 1)
    passed: bool | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def absolute(section: str, prop: str, unit: str, teacher: float | None, student: float | None,
             tolerance: float | None, note: str = "") -> PropertyRecord:
    """A row scored by ``|student - teacher| <= tolerance`` (a missing or non-finite value fails)."""
    ok = _finite(teacher) and _finite(student)
    error = (student - teacher) if ok else None
    passed = None if tolerance is None else bool(ok and abs(error) <= tolerance)
    return PropertyRecord(section, prop, unit, _clean(teacher), _clean(student), error, tolerance, "abs", passed, note)


def relative(section: str, prop: str, unit: str, teacher: float | None, student: float | None,
             tolerance_pct: float | None, note: str = "") -> PropertyRecord:
    """A row scored by ``100 |student - teacher| / |teacher| <= tolerance_pct``."""
    ok = _finite(teacher) and _finite(student) and teacher != 0
    error = 100.0 * (student - teacher) / abs(teacher) if ok else None
    passed = None if tolerance_pct is None else bool(ok and abs(error) <= tolerance_pct)
    return PropertyRecord(section, prop, unit, _clean(teacher), _clean(student), error, tolerance_pct, "rel_%", passed, note)


def flag(section: str, prop: str, teacher_bad: bool, student_bad: bool, note: str = "") -> PropertyRecord:
    """A yes/no check (e.g. a spurious minimum, a collapse): passes when the student does not
    show the problem, or the teacher shows it too."""
    passed = (not student_bad) or teacher_bad
    return PropertyRecord(section, prop, "flag", float(teacher_bad), float(student_bad), None, None, "flag", passed, note)


def _clean(x: float | None) -> float | None:
    return float(x) if _finite(x) else None


def looser(section: str, prop: str, unit: str, teacher: float, student: float, tolerance_pct: float,
           tolerance_abs: float, note: str = "") -> PropertyRecord:
    """A row scored by the relative ``tolerance_pct`` or the absolute ``tolerance_abs``, whichever
    is looser at the teacher's value (absolute for a value near zero or not finite)."""
    if math.isfinite(teacher) and abs(teacher) * tolerance_pct / 100.0 >= tolerance_abs:
        return relative(section, prop, unit, teacher, student, tolerance_pct, note)
    return absolute(section, prop, unit, teacher, student, tolerance_abs, note)


def unavailable(section: str, prop: str, note: str, unit: str = "flag") -> PropertyRecord:
    """A failing row without values: there is nothing to compare (a calculation failed, a result
    is missing); ``note`` says why."""
    return PropertyRecord(section, prop, unit, None, None, None, None, "flag", False, note)


def errors_note(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """``teacher: <error>; student: <error>`` for each side whose result carries an ``error``."""
    return "; ".join(f"{who}: {r['error']}" for who, r in (("teacher", teacher), ("student", student)) if r.get("error"))
