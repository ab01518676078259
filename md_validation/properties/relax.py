"""Relaxations shared by the property sections: ASE's optimisers and filters, symmetry kept
with ASE's FixSymmetry where a phase must stay itself. A calculator that fails mid-way (a
student leaving its domain: overlapping atoms, non-finite forces) gives a failed result
naming the reason, not an exception that ends the whole report."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE

from md_validation.properties.recipes import nearest_distance


@dataclass
class Relaxed:
    """The end of a relaxation: the structure (calculator detached), its energy per atom (eV),
    whether it converged, the steps taken, its shortest distance (Å) and an error if it failed."""

    atoms: Atoms
    energy: float
    converged: bool
    steps: int
    min_distance: float
    error: str = ""

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.atoms)


def _failed(atoms: Atoms, exc: Exception, steps: int) -> Relaxed:
    out = atoms.copy()
    out.calc = None
    try:
        dmin = nearest_distance(out)
    except Exception:  # noqa: BLE001 - geometry so broken that even the distance fails
        dmin = math.nan
    return Relaxed(out, math.nan, False, steps, dmin, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def keep_symmetry(atoms: Atoms) -> None:
    """Constrain ``atoms`` to their space group (ASE's FixSymmetry, symprec 1e-3), spglib's
    warnings about near-symmetric starts silenced: the constraint is what decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))


def relax(atoms: Atoms, calc: Calculator, fmax: float = 0.005, steps: int = 300, cell: bool = True,
          symmetry: bool = True, optimizer: str = "BFGS") -> Relaxed:
    """Relax ``atoms`` with ``calc``: positions, and the cell to zero stress when ``cell``;
    space-group symmetry kept when ``symmetry`` (so a phase stays that phase)."""
    work = atoms.copy()
    work.calc = calc
    if symmetry:
        keep_symmetry(work)
    target = FrechetCellFilter(work) if cell else work
    opt_class = {"BFGS": BFGS, "FIRE": FIRE}[optimizer]
    opt = opt_class(target, logfile=None)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
        energy = float(work.get_potential_energy())
        if not math.isfinite(energy):
            raise FloatingPointError("non-finite energy")
    except (ValueError, FloatingPointError, RuntimeError, np.linalg.LinAlgError) as exc:
        return _failed(work, exc, opt.nsteps)
    work.set_constraint()
    out = work.copy()
    out.calc = None
    return Relaxed(out, energy, converged, opt.nsteps, nearest_distance(out))


def energy_at(atoms: Atoms, calc: Calculator) -> float:
    """Energy (eV) of ``atoms`` with ``calc``; NaN when the calculator refuses the structure."""
    work = atoms.copy()
    work.calc = calc
    try:
        e = float(work.get_potential_energy())
    except (ValueError, FloatingPointError, RuntimeError):
        return math.nan
    return e if math.isfinite(e) else math.nan


def scaled(atoms: Atoms, volume_factor: float) -> Atoms:
    """A copy with the cell (and atoms) scaled isotropically to ``volume_factor`` times the volume."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array * volume_factor ** (1.0 / 3.0), scale_atoms=True)
    return out
