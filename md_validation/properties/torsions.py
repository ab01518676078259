"""Torsion profiles of molecules: a 360° scan of one rotatable dihedral.

The dihedral (i, j, k, l): the rotatable bond j-k (:func:`mlffd.sampling.torsions.rotatable_bonds`:
single, acyclic, heavy neighbours on both sides) whose smaller side holds the most heavy atoms
(the most central one), i and l the lowest-index heavy neighbours of j and k. The scan angles are
the same for every calculator: the start conformer's dihedral plus 360° n / ``torsion_points``.
Each point starts from the calculator's own minimum with the smaller side rigidly rotated to
the angle (ASE ``set_dihedral``); ``torsion_mode`` ``relaxed`` then relaxes every other
coordinate with the dihedral held (ASE ``FixInternals``, BFGS to ``molecule_fmax``), ``rigid``
takes the energy as it is. The profile is E(phi) - min E over the scan, each calculator's own.

Compared per molecule: the largest |student - teacher| over the profile (``torsion_meV``;
both zero at their own lowest point) and the barrier, highest minus lowest point of the scan
(``barrier_meV``). A point whose relaxation fails is NaN and fails the rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.constraints import FixInternals
from tqdm.auto import tqdm

from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.molecules import minimum, num, relax_molecule
from md_validation.properties.records import PropertyRecord, absolute
from md_validation.properties.relax import energy_at
from md_validation.properties.system import System

SECTION = "torsions"
DEPENDS = ("md_validation.properties.molecules", "mlffd.sampling.torsions")


def scan_dihedral(atoms: Atoms) -> tuple[tuple[int, int, int, int], list[int]] | None:
    """The dihedral (i, j, k, l) to scan and the atoms that move (the k side), or None when the
    molecule has no rotatable bond."""
    from mlffd.sampling.torsions import adjacency, rotatable_bonds, side

    bonds = np.asarray(atoms.info["bonds"], int).reshape(-1, 2)
    orders = atoms.info.get("bond_orders")
    candidates = rotatable_bonds(atoms.numbers, bonds, orders)
    if not candidates:
        return None
    adj = adjacency(len(atoms), bonds)
    best = None
    for j, k in candidates:
        moving = side(adj, j, k)
        if len(moving) > len(atoms) // 2:
            j, k = k, j
            moving = side(adj, j, k)
        heavy = sum(1 for a in moving if atoms.numbers[a] > 1)
        if best is None or heavy > best[0]:
            best = (heavy, j, k, moving)
    _, j, k, moving = best
    i = min(b for b in adj[j] if b != k and atoms.numbers[b] > 1)
    l = min(b for b in adj[k] if b != j and atoms.numbers[b] > 1)  # noqa: E741
    return (int(i), int(j), int(k), int(l)), sorted(int(a) for a in moving)


def scan_angles(start: Atoms, dihedral: tuple[int, int, int, int], points: int) -> np.ndarray:
    phi0 = float(start.get_dihedral(*dihedral))
    return np.mod(phi0 + 360.0 * np.arange(points) / points, 360.0)


def compute(calc: Calculator, system: System, ground: dict[str, Any], config: PropertiesConfig) -> dict[str, Any]:
    """Per molecule: the dihedral, the scan angles (°), the energies (eV) and the profile (meV)."""
    out: dict[str, Any] = {}
    for name, start in tqdm(system.molecules.items(), desc="torsions", unit="molecule", leave=False, disable=None):
        found = scan_dihedral(start)
        if found is None:
            out[name] = {"error": "", "dihedral": None, "note": "no rotatable bond"}
            continue
        dihedral, moving = found
        angles = scan_angles(start, dihedral, config.torsion_points)
        entry = ground[name]
        if not np.isfinite(num(entry.get("energy"))):
            out[name] = {"error": f"no minimum ({entry.get('error') or 'relaxation failed'})", "dihedral": list(dihedral)}
            continue
        base = minimum(ground, name)
        energies, held, converged, errors = [], [], [], []
        for phi in angles:
            atoms = base.copy()
            atoms.set_dihedral(*dihedral, float(phi), indices=moving)
            if config.torsion_mode == "rigid":
                energies.append(energy_at(atoms, calc))
                held.append(float(atoms.get_dihedral(*dihedral)))
                converged.append(True)
                errors.append("")
                continue
            atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), list(dihedral)]]))
            r = relax_molecule(atoms, calc, config)
            end = Atoms(numbers=r["atoms"]["numbers"], positions=r["atoms"]["positions"])
            energies.append(num(r["energy"]))
            held.append(float(end.get_dihedral(*dihedral)))
            converged.append(bool(r["converged"]))
            errors.append(r["error"])
        e = np.asarray(energies, float)
        profile = 1000.0 * (e - np.nanmin(e)) if np.isfinite(e).any() else e
        out[name] = {"dihedral": list(dihedral), "angles_deg": angles.tolist(), "energies_eV": e.tolist(),
                     "profile_meV": profile.tolist(), "held_deg": held, "converged": converged,
                     "error": "; ".join(sorted({x for x in errors if x})), "mode": config.torsion_mode}
    return out


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    rows: list[PropertyRecord] = []
    for name in dict.fromkeys([*teacher, *student]):
        t, s = teacher.get(name) or {}, student.get(name) or {}
        if t.get("dihedral") is None and s.get("dihedral") is None and not t.get("error") and not s.get("error"):
            continue  # no rotatable bond: nothing to scan
        parts = [f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error")]
        unconverged = [f"{who}: {x['converged'].count(False)} points not converged" for who, x in
                       (("teacher", t), ("student", s)) if x.get("converged") and x["converged"].count(False)]
        pt, ps = np.asarray(t.get("profile_meV") or [], float), np.asarray(s.get("profile_meV") or [], float)
        dih = t.get("dihedral") or s.get("dihedral")
        note = "; ".join(parts + unconverged + [f"dihedral {dih} ({t.get('mode', '')} scan, {len(pt)} points)"])
        if len(pt) and len(pt) == len(ps):
            diff = np.abs(ps - pt)
            worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.nan
            k = int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0
            rows.append(absolute(SECTION, f"{name}_torsion_profile_meV", "meV", float(pt[k]), float(ps[k]) if math.isfinite(worst) else None,
                                 tolerances.torsion_meV, note + f"; largest error at {t['angles_deg'][k]:.0f}°"))
            bt = float(np.max(pt) - np.min(pt)) if np.all(np.isfinite(pt)) else math.nan
            bs = float(np.max(ps) - np.min(ps)) if np.all(np.isfinite(ps)) else math.nan
            rows.append(absolute(SECTION, f"{name}_torsion_barrier_meV", "meV", bt, bs, tolerances.barrier_meV, note))
        else:
            rows.append(absolute(SECTION, f"{name}_torsion_profile_meV", "meV", None, None, tolerances.torsion_meV, note))
    return rows


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Each molecule's profile, teacher solid, student dashed."""
    from matplotlib.figure import Figure

    from md_validation.report import figure_png

    names = [n for n, t in teacher.items() if t.get("profile_meV")]
    if not names:
        return {}
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        for role, res, style in (("teacher", teacher, "o-"), ("student", student, "s--")):
            r = res.get(name) or {}
            if r.get("profile_meV"):
                order = np.argsort(r["angles_deg"])
                ax.plot(np.asarray(r["angles_deg"])[order], np.asarray(r["profile_meV"])[order], style, ms=3,
                        label=labels.get(role, role))
        ax.set_title(f"{name} {teacher[name].get('dihedral')}", fontsize=8)
        ax.set_xlabel("dihedral (°)", fontsize=8)
        ax.set_ylabel("E - min (meV)", fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return {"torsion_profiles": figure_png(fig)}
