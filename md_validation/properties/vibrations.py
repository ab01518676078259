"""Harmonic vibrational frequencies of molecules, each calculator at its own minimum.

The Hessian comes from central differences of the forces (every Cartesian coordinate displaced
by ±``config.displacement`` Å, the same step for every calculator; 6N force calls), symmetrised
and mass-weighted (ASE's masses). Translations and rotations are projected out exactly: the
mass-weighted Hessian is diagonalised in the complement of the rigid-body vectors (6 of them, 5
for a linear molecule), which leaves the 3N-6 (3N-5) internal modes, in cm^-1, an imaginary one
given as a negative number. Units as ASE's ``Vibrations``: hbar sqrt(lambda / amu) per Å^2.

Comparison per molecule, modes matched in ascending order (the usual order-matching of a
frequency comparison; crossing modes of similar frequency count as small errors): the mean
absolute error of the real modes (``frequency_cm``), the mode with the largest relative error
among the modes the teacher puts above :data:`REL_MIN_CM` (``frequency_pct``; below it a few
cm^-1 of a soft torsion are a large relative error and mean nothing), and a flag when the student
has a mode below -``imaginary_cm`` at its own minimum where the teacher has none (a minimum
that is a saddle point for the student).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.molecules import minimum, num
from md_validation.properties.records import PropertyRecord, absolute, flag, relative
from md_validation.properties.system import System

SECTION = "vibrations"
DEPENDS = ("md_validation.properties.molecules",)
#: relative frequency errors are taken over the modes above this (cm^-1) in the teacher
REL_MIN_CM = 100.0
#: hbar sqrt(eV / (Å^2 amu)) in eV (ASE's Vibrations constant), then in cm^-1
_EV_PER_SQRT = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
CM_PER_SQRT = _EV_PER_SQRT / units.invcm


def hessian(atoms: Atoms, calc: Calculator, delta: float) -> np.ndarray:
    """Cartesian Hessian (eV/Å^2, ``[3N, 3N]``, symmetrised) by central differences of the forces."""
    work = atoms.copy()
    work.calc = calc
    n = len(work)
    h = np.zeros((3 * n, 3 * n))
    pos0 = work.positions.copy()
    for a in range(n):
        for c in range(3):
            forces = []
            for sign in (1.0, -1.0):
                pos = pos0.copy()
                pos[a, c] += sign * delta
                work.positions = pos
                forces.append(np.asarray(work.get_forces(), float).ravel())
            h[3 * a + c] = -(forces[0] - forces[1]) / (2.0 * delta)
    return 0.5 * (h + h.T)


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted translation and rotation vectors, ``[3N, k]`` (k = 6, or 5 for a
    linear molecule)."""
    n = len(positions)
    sq = np.sqrt(np.asarray(masses, float))
    com = np.sum(positions * masses[:, None], axis=0) / np.sum(masses)
    r = positions - com
    vecs = []
    for c in range(3):
        t = np.zeros((n, 3))
        t[:, c] = sq
        vecs.append(t.ravel())
    for c in range(3):
        axis = np.zeros(3)
        axis[c] = 1.0
        vecs.append((np.cross(axis, r) * sq[:, None]).ravel())
    u, s, _ = np.linalg.svd(np.stack(vecs, axis=1), full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def frequencies_cm(h: np.ndarray, positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """The internal-mode frequencies (cm^-1, ascending, imaginary ones negative) of Hessian ``h``."""
    masses = np.asarray(masses, float)
    inv = 1.0 / np.sqrt(np.repeat(masses, 3))
    hm = h * inv[:, None] * inv[None, :]
    rigid = rigid_body_basis(np.asarray(positions, float), masses)
    full, _, _ = np.linalg.svd(rigid, full_matrices=True)
    internal = full[:, rigid.shape[1]:]
    lam = np.linalg.eigvalsh(internal.T @ hm @ internal)
    return np.sort(np.sign(lam) * np.sqrt(np.abs(lam)) * CM_PER_SQRT)


def compute(calc: Calculator, system: System, ground: dict[str, Any], config: PropertiesConfig) -> dict[str, Any]:
    """Per molecule at ``calc``'s own minimum: the frequencies (cm^-1) or an error."""
    out: dict[str, Any] = {}
    for name in tqdm(system.molecules, desc="vibrations", unit="molecule", leave=False, disable=None):
        entry = ground[name]
        if not np.isfinite(num(entry.get("energy"))):
            out[name] = {"error": f"no minimum ({entry.get('error') or 'relaxation failed'})"}
            continue
        atoms = minimum(ground, name)
        try:
            h = hessian(atoms, calc, config.displacement)
            if not np.all(np.isfinite(h)):
                raise FloatingPointError("non-finite forces")
        except (ValueError, FloatingPointError, RuntimeError) as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            continue
        freqs = frequencies_cm(h, atoms.positions, atoms.get_masses())
        out[name] = {"frequencies_cm": freqs.tolist(), "converged": entry.get("converged"), "error": ""}
    return out


def mode_errors(t: list[float], s: list[float]) -> dict[str, Any]:
    """MAE of the real modes (both real, matched in order) and the mode of largest relative error
    above :data:`REL_MIN_CM`."""
    ft, fs = np.asarray(t, float), np.asarray(s, float)
    if len(ft) != len(fs) or not len(ft):
        return {"mae": np.nan, "worst": None}
    real = (ft > 0) & (fs > 0)
    mae = float(np.mean(np.abs(fs[real] - ft[real]))) if real.any() else np.nan
    above = np.flatnonzero(ft > REL_MIN_CM)
    worst = None
    if len(above):
        rel = np.abs(fs[above] - ft[above]) / ft[above]
        k = int(above[int(np.argmax(rel))])
        worst = (k, float(ft[k]), float(fs[k]))
    return {"mae": mae, "worst": worst}


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    rows: list[PropertyRecord] = []
    maes = []
    for name in dict.fromkeys([*teacher, *student]):
        t, s = teacher.get(name) or {}, student.get(name) or {}
        note = "; ".join(f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error"))
        ft, fs = t.get("frequencies_cm") or [], s.get("frequencies_cm") or []
        e = mode_errors(ft, fs)
        maes.append(e["mae"])
        n_real = sum(1 for a, b in zip(ft, fs) if a > 0 and b > 0)
        rows.append(absolute(SECTION, f"{name}_frequency_mae_cm", "cm^-1", 0.0, e["mae"], tolerances.frequency_cm,
                             note or f"{n_real} real modes, matched in ascending order"))
        if e["worst"] is not None:
            k, vt, vs = e["worst"]
            rows.append(relative(SECTION, f"{name}_frequency_worst_cm", "cm^-1", vt, vs, tolerances.frequency_pct,
                                 f"mode {k + 1} of {len(ft)}: the largest relative error above {REL_MIN_CM:g} cm^-1"))
        else:
            rows.append(relative(SECTION, f"{name}_frequency_worst_cm", "cm^-1", None, None, tolerances.frequency_pct,
                                 note or "no frequencies to compare"))
        cut = -tolerances.imaginary_cm
        t_bad = bool(ft) and min(ft) < cut
        s_bad = (bool(fs) and min(fs) < cut) or (not fs and bool(ft))
        rows.append(flag(SECTION, f"{name}_imaginary_modes", t_bad, s_bad,
                         f"modes below {cut:g} cm^-1 at its own minimum: teacher {sum(f < cut for f in ft)}, "
                         f"student {sum(f < cut for f in fs)}"))
    finite = [m for m in maes if np.isfinite(m)]
    if len(maes) > 1 and finite:
        rows.append(absolute(SECTION, "all_frequency_mae_cm", "cm^-1", 0.0, float(np.mean(finite)), None,
                             f"mean over {len(finite)} molecules"))
    return rows


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Every molecule's frequencies, student against teacher (matched in order)."""
    from md_validation.properties.plots import molecule_parity

    return {"vibrations_parity": molecule_parity(teacher, student, "frequencies_cm", labels, "frequency", "cm$^{-1}$",
                                                 size=(5.5, 5.0))}
