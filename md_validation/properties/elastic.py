"""Elastic constants of the relaxed ground state by stress-strain.

Each Voigt strain component j (1-3 normal, 4-6 engineering shear: ε_yz = γ/2) is applied at
:data:`STRAINS` to the relaxed ground cell (deformation F = 1 + ε, atoms carried along); the
stress is read with the atoms clamped at their homogeneously strained positions (clamped-ion
C0_ij) and after relaxing the positions at the fixed strained cell (relaxed-ion C_ij, the
constants an experiment measures). C_ij is the least-squares slope of σ_i against the strain,
the unstrained stress included, so a small residual stress of the ground state drops out;
± strains cancel the quadratic (third-order constant) term.

Sign: ASE's stress is σ = (1/V) ∂E/∂ε (tension positive), so C_ij = +∂σ_i/∂ε_j.

The 6x6 matrix is made symmetric and averaged over the crystal's point group (spglib, in the
cell's Cartesian frame), so symmetry-equivalent constants are equal; one key per class of
equal, symmetry-allowed nonzero constants: C11, C12, C44 for a cubic crystal, also C13, C33,
C66, ... for lower symmetry (key = first component of the class, 1-based Voigt indices).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.records import PropertyRecord, errors_note, flag, looser, relative, unavailable
from md_validation.properties.system import System

SECTION = "elastic"
#: Voigt strains applied (both signs: the quadratic term cancels in the slope)
STRAINS = (-0.01, -0.005, 0.005, 0.01)
#: force threshold of the relaxed-ion relaxations (eV/Å): the internal-strain part of C44 of
#: silicon is ~60 GPa, so a residual displacement of 1e-4 Å at 0.5 % strain is already ~1 GPa
ION_FMAX = 1e-4
#: most optimiser steps per relaxed-ion relaxation
ION_STEPS = 200
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strained(atoms: Atoms, component: int, strain: float) -> Atoms:
    """A copy of ``atoms`` under Voigt strain ``component`` (0-5) of magnitude ``strain``
    (engineering shear for 3-5), atoms carried along with the cell."""
    eps = np.zeros((3, 3))
    i, j = _VOIGT[component]
    if i == j:
        eps[i, i] = strain
    else:
        eps[i, j] = eps[j, i] = strain / 2.0
    out = atoms.copy()
    # rows of the cell are lattice vectors: a' = (1 + ε) a  ->  cell' = cell (1 + ε)^T
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
    return out


def _stress(atoms: Atoms, calc: Calculator, relax_ions: bool) -> tuple[np.ndarray, bool, Atoms]:
    """Voigt stress (GPa) of ``atoms``, positions first relaxed at fixed cell if ``relax_ions``;
    whether that relaxation converged; the structure the stress belongs to."""
    work = atoms.copy()
    work.calc = calc
    converged = True
    if relax_ions and len(work) > 1:
        converged = bool(BFGS(work, logfile=None).run(fmax=ION_FMAX, steps=ION_STEPS))
    s = np.asarray(work.get_stress(voigt=True), float) / units.GPa
    if not np.isfinite(s).all():
        raise FloatingPointError(f"non-finite stress {s.tolist()}")
    out = work.copy()
    out.calc = None
    return s, converged, out


def _slopes(stresses: np.ndarray) -> np.ndarray:
    """C (GPa) from stresses[j, k, i] (component j, strain k of (0,) + STRAINS, stress i)."""
    e = np.array((0.0, *STRAINS))
    e = e - e.mean()
    return np.einsum("k,jki->ij", e, stresses - stresses.mean(axis=1, keepdims=True)) / np.dot(e, e)


def _cartesian_rotations(atoms: Atoms) -> list[np.ndarray]:
    """The point group of ``atoms`` as orthogonal Cartesian matrices (identity alone if unknown)."""
    try:
        import spglib

        ds = spglib.get_symmetry_dataset((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers), symprec=1e-3)
    except Exception:  # noqa: BLE001 - no spglib: no symmetry averaging, every component its own key
        ds = None
    if ds is None:
        return [np.eye(3)]
    lat = atoms.cell.array.T  # columns: lattice vectors, x_cart = lat @ x_frac
    out = []
    for r in ds.rotations:
        m = lat @ r @ np.linalg.inv(lat)
        u, _, vt = np.linalg.svd(m)  # remove the rounding of a slightly-off relaxed lattice
        out.append(u @ vt)
    return out


def _full(c: np.ndarray) -> np.ndarray:
    t = np.zeros((3, 3, 3, 3))
    for a, (i, j) in enumerate(_VOIGT):
        for b, (k, l) in enumerate(_VOIGT):
            for p, q in ((i, j), (j, i)):
                for r, s in ((k, l), (l, k)):
                    t[p, q, r, s] = c[a, b]
    return t


def symmetrize(c: np.ndarray, rotations: list[np.ndarray]) -> np.ndarray:
    """``c`` (6x6 Voigt) made symmetric and averaged over ``rotations``."""
    t = _full(0.5 * (c + c.T))
    acc = sum(np.einsum("ia,jb,kc,ld,abcd->ijkl", r, r, r, r, t) for r in rotations) / len(rotations)
    return np.array([[acc[i, j, k, l] for (k, l) in _VOIGT] for (i, j) in _VOIGT])


def constant_classes(rotations: list[np.ndarray]) -> list[list[tuple[int, int]]]:
    """Classes of upper-triangle Voigt components equal by symmetry and not zero by symmetry,
    found by symmetrizing a generic matrix; each class is sorted, its first member names it."""
    rng = np.random.default_rng(12345)
    g = rng.normal(size=(6, 6)) + 10.0 * np.eye(6)
    gs = symmetrize(g, rotations)
    scale = np.abs(gs).max()
    classes: list[list[tuple[int, int]]] = []
    values: list[float] = []
    for a in range(6):
        for b in range(a, 6):
            v = gs[a, b]
            if abs(v) < 1e-7 * scale:
                continue
            for cls, w in zip(classes, values):
                if abs(v - w) < 1e-7 * scale:
                    cls.append((a, b))
                    break
            else:
                classes.append([(a, b)])
                values.append(v)
    return classes


def _key(cls: list[tuple[int, int]]) -> str:
    a, b = cls[0]
    return f"C{a + 1}{b + 1}"


def reuss_bulk_modulus(c: np.ndarray) -> float:
    """Bulk modulus (GPa) under hydrostatic stress, 1 / sum of the compliances S_ij, i,j <= 3
    (equals (C11 + 2 C12) / 3 for a cubic crystal, and the equation of state's B)."""
    try:
        s = np.linalg.inv(c)
    except np.linalg.LinAlgError:
        return math.nan
    total = float(s[:3, :3].sum())
    return 1.0 / total if total != 0 else math.nan


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Relaxed- and clamped-ion C_ij (GPa) of ``ground`` for one calculator (JSON-able)."""
    rotations = _cartesian_rotations(ground)
    classes = constant_classes(rotations)
    out: dict[str, Any] = {"strains": list(STRAINS), "classes": {_key(c): [list(x) for x in c] for c in classes},
                           "natoms": len(ground), "point_group_order": len(rotations), "error": "",
                           "ions_converged": True}
    nan6 = np.full((6, 6), math.nan)
    raw = {"relaxed": np.zeros((6, 1 + len(STRAINS), 6)), "clamped": np.zeros((6, 1 + len(STRAINS), 6))}
    try:
        # the reference: positions relaxed at the ground cell, so the clamped-ion strains start at rest
        s0, converged, base = _stress(ground, calc, relax_ions=True)
        for j in range(6):
            raw["relaxed"][j, 0] = s0
            raw["clamped"][j, 0] = s0
            for k, e in enumerate(STRAINS, start=1):
                atoms = strained(base, j, e)
                raw["clamped"][j, k], _, _ = _stress(atoms, calc, relax_ions=False)
                raw["relaxed"][j, k], ok, _ = _stress(atoms, calc, relax_ions=True)
                converged &= ok
        out["ions_converged"] = converged
        mats = {kind: _slopes(raw[kind]) for kind in raw}
    except FAILURES as exc:
        out["error"] = error_text(exc)
        mats = {"relaxed": nan6, "clamped": nan6}
    for kind, c in mats.items():
        out[f"C_{kind}_raw_GPa"] = c.tolist()
        cs = symmetrize(c, rotations) if np.isfinite(c).all() else nan6
        out[f"C_{kind}_GPa"] = cs.tolist()
        out[f"constants_{kind}"] = {_key(cl): float(np.mean([cs[a, b] for a, b in cl])) for cl in classes}
    c = np.asarray(out["C_relaxed_GPa"])
    finite = bool(np.isfinite(c).all())
    out["bulk_modulus_GPa"] = reuss_bulk_modulus(c) if finite else math.nan
    out["min_eigenvalue_GPa"] = float(np.linalg.eigvalsh(c).min()) if finite else math.nan
    return out


# ----------------------------------------------------------------------------- comparison


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: each relaxed- and clamped-ion constant (relative ``elastic_pct`` or absolute
    ``elastic_abs_GPa``, whichever is looser); the Reuss bulk modulus (not scored); a
    Born-stability flag (smallest eigenvalue of C_ij <= 0)."""
    note = errors_note(teacher, student)
    rows: list[PropertyRecord] = []
    for kind, suffix in (("relaxed", ""), ("clamped", "_clamped")):
        t, s = teacher.get(f"constants_{kind}") or {}, student.get(f"constants_{kind}") or {}
        for key in dict.fromkeys([*t, *s]):
            missing = "" if key in t and key in s else f"{key} missing for the {'teacher' if key not in t else 'student'}"
            rows.append(looser(SECTION, f"{key}{suffix}_GPa", "GPa", num(t.get(key)), num(s.get(key)),
                               tolerances.elastic_pct, tolerances.elastic_abs_GPa, "; ".join(x for x in (note, missing) if x)))
    rows.append(relative(SECTION, "bulk_modulus_from_Cij_GPa", "GPa", num(teacher.get("bulk_modulus_GPa")),
                         num(student.get("bulk_modulus_GPa")), None,
                         "Reuss bound of the relaxed-ion C_ij; a consistency check against the equation of state"))
    t_min, s_min = num(teacher.get("min_eigenvalue_GPa")), num(student.get("min_eigenvalue_GPa"))
    if math.isfinite(t_min) and math.isfinite(s_min):
        rows.append(flag(SECTION, "elastic_instability", t_min <= 0, s_min <= 0,
                         f"smallest eigenvalue of C_ij: teacher {t_min:.3g}, student {s_min:.3g} GPa"))
    else:
        rows.append(unavailable(SECTION, "elastic_instability", note or "elastic constants missing"))
    return rows


# ----------------------------------------------------------------------------- figure


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Bar chart of the relaxed-ion (filled) and clamped-ion (hatched) constants, teacher vs student."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import no_data, paired_bars
    from md_validation.report import figure_png

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    keys = list(dict.fromkeys([*(teacher.get("constants_relaxed") or {}), *(student.get("constants_relaxed") or {})]))
    x = paired_bars(ax, keys, (("teacher", teacher), ("student", student)),
                    (("relaxed", "relaxed ions"), ("clamped", "clamped ions")),
                    lambda res, kind, k: num((res.get(f"constants_{kind}") or {}).get(k)), labels)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(keys)
    ax.set_ylabel("GPa")
    ax.set_title("elastic constants")
    ax.legend(fontsize=8)
    if not keys:
        no_data(ax, "no elastic constants")
    return {"elastic_constants": figure_png(fig)}
