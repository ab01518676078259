"""Conformer energies of molecules: several RDKit conformers (ETKDG, MMFF94-preoptimised,
near-duplicates pruned: :func:`mlffd.sampling.molecules.conformers`), up to ``config.conformers``
per molecule, each relaxed by each calculator (BFGS to ``molecule_fmax``); energies relative to
that calculator's lowest conformer.

Compared per molecule with at least two conformers: the mean absolute error of the relative
energies (``conformer_meV``) and the Spearman rank correlation of the student's order with the
teacher's (passes when rho >= 1 - ``conformer_rank``; the teacher's own rho is 1). Conformers
that relax into the same minimum have (nearly) equal energies, and their order is noise: energies
are ranked on a :data:`RANK_RESOLUTION_MEV` grid (closer ones tie), and where the teacher's
conformers all tie there is no ranking to score (the row is reported, not scored).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.molecules import num, relax_molecule
from md_validation.properties.records import PropertyRecord, absolute
from md_validation.properties.system import System

SECTION = "conformers"
#: relative energies are ranked on this grid (meV): conformers closer than it tie
RANK_RESOLUTION_MEV = 1.0
DEPENDS = ("md_validation.properties.molecules", "mlffd.sampling.molecules")


def compute(calc: Calculator, system: System, ground: dict[str, Any], config: PropertiesConfig) -> dict[str, Any]:
    """Per molecule: each conformer's relaxed energy (eV) and the relative energies (meV)."""
    out: dict[str, Any] = {}
    for name, start in tqdm(system.molecules.items(), desc="conformers", unit="molecule", leave=False, disable=None):
        confs = np.asarray(start.info.get("conformers", start.positions[None]), float)[: config.conformers]
        energies, converged, errors = [], [], []
        for pos in confs:
            r = relax_molecule(Atoms(numbers=start.numbers, positions=pos), calc, config)
            energies.append(num(r["energy"]))
            converged.append(bool(r["converged"]))
            errors.append(r["error"])
        e = np.asarray(energies, float)
        rel = 1000.0 * (e - np.nanmin(e)) if np.isfinite(e).any() else e
        out[name] = {"energies_eV": e.tolist(), "relative_meV": rel.tolist(), "converged": converged,
                     "error": "; ".join(sorted({x for x in errors if x}))}
    return out


def spearman(a: np.ndarray, b: np.ndarray, resolution: float = RANK_RESOLUTION_MEV) -> float:
    """Spearman's rho of energies ranked on a ``resolution`` grid (NaN when either has no spread there)."""
    from scipy.stats import spearmanr

    a, b = np.round(np.asarray(a, float) / resolution), np.round(np.asarray(b, float) / resolution)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    rows: list[PropertyRecord] = []
    for name in dict.fromkeys([*teacher, *student]):
        t, s = teacher.get(name) or {}, student.get(name) or {}
        rt, rs = np.asarray(t.get("relative_meV") or [], float), np.asarray(s.get("relative_meV") or [], float)
        if len(rt) < 2 and len(rs) < 2:
            continue  # one conformer: nothing to rank
        parts = [f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error")]
        parts += [f"{who}: {x['converged'].count(False)} not converged" for who, x in (("teacher", t), ("student", s))
                  if x.get("converged") and x["converged"].count(False)]
        note = "; ".join(parts + [f"{len(rt)} conformers"])
        ok = len(rt) == len(rs) and np.all(np.isfinite(rt)) and np.all(np.isfinite(rs))
        mae = float(np.mean(np.abs(rs - rt))) if ok else math.nan
        rows.append(absolute(SECTION, f"{name}_conformer_mae_meV", "meV", 0.0, mae, tolerances.conformer_meV, note))
        rho = spearman(rt, rs) if ok else math.nan
        if ok and np.ptp(np.round(rt / RANK_RESOLUTION_MEV)) == 0:
            rows.append(absolute(SECTION, f"{name}_conformer_spearman", "rho", None, rho, None,
                                 note + f"; the teacher's conformers are within {RANK_RESOLUTION_MEV:g} meV: no ranking"))
        else:
            rows.append(absolute(SECTION, f"{name}_conformer_spearman", "rho", 1.0, rho, tolerances.conformer_rank,
                                 note + "; passes when rho >= 1 - tolerance"))
    return rows


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Relative conformer energies, student against teacher."""
    from md_validation.properties.plots import molecule_parity

    return {"conformer_energies": molecule_parity(teacher, student, "relative_meV", labels, "E - lowest", "meV", marker="o",
                                                  min_points=2)}
