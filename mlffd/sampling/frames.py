"""Labelled frames, the cheap structural descriptor and near-duplicate-free frame selection."""


from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.calculators.singlepoint import SinglePointCalculator

from mlffd.neighbors import neighbor_list

#: What a teacher raises when it fails on one structure (an SCF that does not converge: ASE's
#: CalculationFailed; a non-finite result: FloatingPointError): sampling drops that structure and
#: the active loop records it as a teacher error, and both go on. A teacher that cannot be set up
#: (ASE's CalculatorSetupError, e.g. an unknown method) or lacks a property is not caught: it
#: would fail on every structure, so it stops the run.
TEACHER_FAILURES = (CalculationFailed, FloatingPointError)


def labelled_frame(atoms: Atoms, calc_results: dict[str, Any], info: dict[str, Any]) -> Atoms:
    """A clean copy of ``atoms`` holding the teacher's energy, forces, stress (SinglePointCalculator)."""
    frame = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())
    energy = float(calc_results["energy"])
    kw: dict[str, Any] = {"energy": energy, "free_energy": float(calc_results.get("free_energy", energy))}
    kw["forces"] = np.asarray(calc_results["forces"], dtype=np.float64).reshape(len(frame), 3).copy()
    if calc_results.get("stress") is not None:
        stress = np.asarray(calc_results["stress"], dtype=np.float64)
        if stress.shape == (3, 3):
            from ase.stress import full_3x3_to_voigt_6_stress

            stress = full_3x3_to_voigt_6_stress(stress)
        kw["stress"] = stress.reshape(6).copy()
    frame.calc = SinglePointCalculator(frame, **kw)
    frame.info.update(info)
    return frame


def has_stress(atoms: Atoms) -> bool:
    """Whether a stress means anything for ``atoms``: a cell of rank 3, periodic in every direction
    (a molecule in a box with free boundaries has no pressure)."""
    return atoms.cell.rank == 3 and bool(np.all(atoms.pbc))


def evaluate(atoms: Atoms, calc) -> dict[str, Any]:
    """Teacher energy, forces and stress of ``atoms`` (one evaluation; stress only for periodic 3-D cells)."""
    atoms.calc = calc
    out: dict[str, Any] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    out["free_energy"] = calc.results.get("free_energy", out["energy"])
    if has_stress(atoms):
        out["stress"] = atoms.get_stress(voigt=True)
    return out


def descriptor(atoms: Atoms, cutoff: float = 5.0, bins: int = 40, width: float = 0.1) -> np.ndarray:
    """Cheap per-structure descriptor: Gaussian-smeared pair-distance histogram per atom plus E/atom.

    The histogram (neighbours per atom per bin) captures density, coordination and disorder; the
    last entry is the energy per atom in units of 10 meV (only when the frame has an energy).
    """
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    d = np.linalg.norm(atoms.positions[edges.j] - atoms.positions[edges.i] + edges.shifts(atoms.cell.array), axis=1)
    centres = np.linspace(0.0, cutoff, bins)
    hist = np.exp(-0.5 * ((d[:, None] - centres[None, :]) / width) ** 2).sum(0) / max(len(atoms), 1)
    hist *= width * np.sqrt(2 * np.pi) / (centres[1] - centres[0])  # ~ counts per bin
    e = 0.0
    if atoms.calc is not None and "energy" in getattr(atoms.calc, "results", {}):
        e = float(atoms.calc.results["energy"]) / len(atoms) / 0.01
    return np.concatenate([hist, [e]])


def select_frames(descriptors: np.ndarray, n: int | None = None, min_distance: float = 0.0) -> list[int]:
    """Farthest-point selection: indices (in selection order) of up to ``n`` mutually distant rows.

    Starts from row 0 (the first sampled frame) and repeatedly adds the row farthest from those
    chosen; stops at ``n`` rows or when the farthest remaining row is closer than ``min_distance``
    (so exact and near duplicates are dropped).
    """
    x = np.asarray(descriptors, dtype=np.float64)
    m = len(x)
    if m == 0:
        return []
    n = m if n is None else min(int(n), m)
    if n <= 0:
        return []
    chosen = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    while len(chosen) < n:
        k = int(np.argmax(dist))
        if dist[k] <= min_distance:
            break
        chosen.append(k)
        dist = np.minimum(dist, np.linalg.norm(x - x[k], axis=1))
    return chosen


# ---------------------------------------------------------------------------------------------
# running one trajectory
# ---------------------------------------------------------------------------------------------


def sane_results(res: dict[str, Any], max_force: float) -> bool:
    forces = np.asarray(res["forces"], dtype=np.float64)
    ok = np.isfinite(res["energy"]) and np.isfinite(forces).all() and float(np.abs(forces).max(initial=0.0)) <= max_force
    return bool(ok and (res.get("stress") is None or np.isfinite(res["stress"]).all()))


def sane_frame(frame: Atoms, max_force: float) -> bool:
    return sane_results(frame.calc.results, max_force)
