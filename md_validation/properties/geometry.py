"""Geometry of molecules at each calculator's own minimum (``molecules.compute``, BFGS to
``config.molecule_fmax`` from the same RDKit conformer).

Per molecule: the heavy-atom RMSD between the student's and the teacher's minima after the best
rotation and translation (Kabsch; the same atom order, so no matching is needed), the mean
absolute error of every bond length (the molecule's bond graph from RDKit, hydrogens included)
and of every bonded angle. A flag row per molecule: a bond of the molecule broke or a new one
formed during the relaxation (RDKit's connectivity perception of the minimum differs from the
molecule's graph); it passes when the student keeps the graph or the teacher changes it too.
Rows named ``all_*`` are the means over the molecules (not scored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator

from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.molecules import (aligned_rmsd, angle_triples, angles_deg, bond_lengths, heavy_mask, minimum,
                                                 num, same_bonds)
from md_validation.properties.records import PropertyRecord, absolute, flag, unavailable
from md_validation.properties.system import System

SECTION = "geometry"
DEPENDS = ("md_validation.properties.molecules", "mlffd.sampling.molecules")


def compute(calc: Calculator, system: System, ground: dict[str, Any], config: PropertiesConfig) -> dict[str, Any]:
    """Per molecule: the minimum's positions, numbers, bonds, energy, convergence and whether its
    bond graph is the molecule's."""
    out: dict[str, Any] = {}
    for name, start in system.molecules.items():
        entry = ground[name]
        atoms = minimum(ground, name)
        bonds = np.asarray(start.info["bonds"], int).reshape(-1, 2)
        ok = np.isfinite(num(entry.get("energy")))
        out[name] = {"positions": atoms.positions.tolist(), "numbers": atoms.numbers.tolist(), "bonds": bonds.tolist(),
                     "energy": entry.get("energy"), "converged": entry.get("converged"), "steps": entry.get("steps"),
                     "error": entry.get("error", ""), "bonds_kept": bool(ok and same_bonds(atoms, bonds))}
    return out


def _notes(t: dict[str, Any], s: dict[str, Any]) -> str:
    parts = [f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error")]
    parts += [f"{who}: not converged in {x.get('steps')} steps" for who, x in (("teacher", t), ("student", s))
              if x.get("converged") is False and not x.get("error")]
    return "; ".join(parts)


def errors(t: dict[str, Any], s: dict[str, Any]) -> dict[str, float]:
    """Heavy-atom RMSD (Å), bond-length MAE (Å) and angle MAE (°) between two minima (NaN when
    either failed)."""
    if not (np.isfinite(num(t.get("energy"))) and np.isfinite(num(s.get("energy")))):
        return {"rmsd": np.nan, "bond_mae": np.nan, "angle_mae": np.nan}
    pt, ps = np.asarray(t["positions"], float), np.asarray(s["positions"], float)
    bonds = np.asarray(t["bonds"], int).reshape(-1, 2)
    heavy = heavy_mask(np.asarray(t["numbers"]))
    triples = angle_triples(len(pt), bonds)
    return {"rmsd": aligned_rmsd(ps[heavy], pt[heavy]),
            "bond_mae": float(np.mean(np.abs(bond_lengths(ps, bonds) - bond_lengths(pt, bonds)))) if len(bonds) else 0.0,
            "angle_mae": float(np.mean(np.abs(angles_deg(ps, triples) - angles_deg(pt, triples)))) if len(triples) else 0.0}


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    rows: list[PropertyRecord] = []
    means: dict[str, list[float]] = {"rmsd": [], "bond_mae": [], "angle_mae": []}
    for name in dict.fromkeys([*teacher, *student]):
        t, s = teacher.get(name) or {}, student.get(name) or {}
        if not t or not s:
            rows.append(unavailable(SECTION, f"{name}_minimum", f"missing for the {'teacher' if not t else 'student'}", unit=""))
            continue
        note = _notes(t, s)
        e = errors(t, s)
        for key, value in e.items():
            means[key].append(value)
        rows.append(absolute(SECTION, f"{name}_heavy_rmsd_A", "Å", 0.0, e["rmsd"], tolerances.rmsd_A, note))
        rows.append(absolute(SECTION, f"{name}_bond_mae_A", "Å", 0.0, e["bond_mae"], tolerances.bond_A, note))
        rows.append(absolute(SECTION, f"{name}_angle_mae_deg", "deg", 0.0, e["angle_mae"], tolerances.angle_deg, note))
        rows.append(flag(SECTION, f"{name}_bonds_changed", not t.get("bonds_kept", False), not s.get("bonds_kept", False),
                         "a bond broke or formed while relaxing"))
    if len(means["rmsd"]) > 1:
        units = {"rmsd": ("all_heavy_rmsd_A", "Å"), "bond_mae": ("all_bond_mae_A", "Å"), "angle_mae": ("all_angle_mae_deg", "deg")}
        for key, (prop, unit) in units.items():
            rows.append(absolute(SECTION, prop, unit, 0.0, float(np.mean(means[key])), None, "mean over the molecules"))
    return rows


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Bond lengths of every molecule, student against teacher (a parity plot)."""
    from matplotlib.figure import Figure

    from md_validation.report import figure_png

    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.inf, -np.inf
    for name in teacher:
        t, s = teacher[name], student.get(name) or {}
        if not (np.isfinite(num(t.get("energy"))) and np.isfinite(num(s.get("energy")))):
            continue
        bonds = np.asarray(t["bonds"], int).reshape(-1, 2)
        bt = bond_lengths(np.asarray(t["positions"]), bonds)
        bs = bond_lengths(np.asarray(s["positions"]), bonds)
        ax.plot(bt, bs, ".", ms=4, label=name)
        lo, hi = min(lo, bt.min(), bs.min()), max(hi, bt.max(), bs.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
    ax.set_xlabel(f"bond length, {labels.get('teacher', 'teacher')} (Å)")
    ax.set_ylabel(f"bond length, {labels.get('student', 'student')} (Å)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return {"geometry_bonds": figure_png(fig)}
