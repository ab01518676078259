"""Energy of a hexagonal or tetragonal phase against its c/a at fixed volume, teacher and students.

An equation of state relaxes the cell's shape at each volume with the phase's symmetry kept, so
for hcp, simple hexagonal, hex-diamond and beta-tin it follows the minimum of E(c/a). Where that
minimum is shallow, a student whose E(c/a) is a few meV/atom too flat lets the phase slide to
another c/a and leaves its curve; this scan shows the landscape itself. The phase is first relaxed
by the teacher at zero pressure (symmetry kept); each point rescales its cell to the volume
fraction and c/a, relaxes the positions at that cell (symmetry kept: hex-diamond's internal
coordinate) and prints the energy in meV/atom above the row's lowest point.

usage: python tools/phase_shape_scan.py PHASE MODEL [MODEL...] [--teacher SPEC] [--volumes 1.0,1.05,1.1]
       [--ratios 1.30:1.60:13]   (MODEL: shipped name or artifact path; ratios relative: low:high:count of c/a)
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from ase import Atoms
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlffd.calculator import DistilledCalculator
from mlffd.prototypes import prototype
from mlffd.teachers import load_teacher

#: phases whose shape at fixed volume has one free parameter, c/a
AXIAL = ("hcp", "simple_hexagonal", "hex_diamond", "beta_sn")


def _relaxed(atoms: Atoms, calc, cell: bool) -> Atoms:
    work = atoms.copy()
    work.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work.set_constraint(FixSymmetry(work, symprec=1e-3))
        BFGS(FrechetCellFilter(work) if cell else work, logfile=None).run(fmax=1e-3, steps=200)
    work.set_constraint()
    return work


def at_shape(ref: Atoms, volume_fraction: float, ratio: float) -> Atoms:
    """``ref`` with its c axis set to ``ratio`` times a (a and b scaled together) and its volume
    to ``volume_fraction`` of its own, fractional positions kept."""
    a, _, c = ref.cell.lengths()
    s = ratio / (c / a)  # stretch of c relative to a
    cell = ref.cell.array @ np.diag([1.0, 1.0, s]) if np.allclose(ref.cell.array[2, :2], 0) else None
    if cell is None:
        raise ValueError("the phase's c axis is not along z")
    cell = cell * (volume_fraction * ref.get_volume() / abs(np.linalg.det(cell))) ** (1 / 3)
    out = ref.copy()
    out.set_cell(cell, scale_atoms=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=AXIAL)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--teacher", default="sevennet:7net-0")
    ap.add_argument("--symbol", default="Si")
    ap.add_argument("--volumes", default="1.0,1.025,1.05,1.075,1.1")
    ap.add_argument("--ratios", default="0.85:1.05:13", help="low:high:count, as multiples of the teacher's c/a")
    args = ap.parse_args()
    teacher = load_teacher(args.teacher)
    ref = _relaxed(prototype(args.phase, args.symbol), teacher, cell=True)
    a, _, c = ref.cell.lengths()
    lo, hi, n = args.ratios.split(":")
    ratios = np.linspace(float(lo), float(hi), int(n)) * (c / a)
    calcs = [("teacher", teacher)] + [(m, DistilledCalculator(m)) for m in args.models]
    print(f"{args.phase}: teacher's V0 {ref.get_volume() / len(ref):.3f} Å³/atom, c/a {c / a:.4f}")
    print(f"{'c/a':>24s} " + " ".join(f"{r:6.3f}" for r in ratios))
    for f in (float(x) for x in args.volumes.split(",")):
        print(f"V = {f:g} V0")
        for name, calc in calcs:
            e = np.array([_relaxed(at_shape(ref, f, r), calc, cell=False).get_potential_energy() / len(ref) for r in ratios])
            print(f"{name[-24:]:>24s} " + " ".join(f"{1000 * (x - e.min()):6.1f}" for x in e))


if __name__ == "__main__":
    main()
