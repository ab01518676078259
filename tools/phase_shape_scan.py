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

import numpy as np
from ase import Atoms

from mlffd.calculator import DistilledCalculator
from mlffd.prototypes import prototype
from mlffd.sampling.relax import relax_path, relax_seed
from mlffd.teachers import load_teacher

#: phases whose shape at fixed volume has one free parameter, c/a
AXIAL = ("hcp", "simple_hexagonal", "hex_diamond", "beta_sn")


def energy_at_cell(atoms: Atoms, calc) -> float:
    """Energy per atom of ``atoms`` with its positions relaxed at its cell, symmetry kept."""
    work = atoms.copy()
    error = relax_path(work, calc, 200, lambda step: None, cell="fixed", keep_symmetry=True)
    if error:
        raise RuntimeError(f"relaxation at fixed cell {error}")
    return work.get_potential_energy() / len(work)


def at_shape(ref: Atoms, volume_fraction: float, ratio: float) -> Atoms:
    """``ref`` with its c axis (along z) set to ``ratio`` times a, a and b scaled together, and its
    volume to ``volume_fraction`` of its own; fractional positions kept."""
    if not np.allclose(ref.cell.array[2, :2], 0):
        raise ValueError("the phase's c axis is not along z")
    a, _, c = ref.cell.lengths()
    cell = ref.cell.array @ np.diag([1.0, 1.0, ratio / (c / a)])
    cell *= (volume_fraction * ref.get_volume() / abs(np.linalg.det(cell))) ** (1 / 3)
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
    seed = relax_seed(prototype(args.phase, args.symbol), teacher, steps=200, fmax=1e-3)
    if seed.error:
        raise SystemExit(f"the teacher's zero-pressure relaxation of {args.phase} failed: {seed.error}")
    ref = seed.atoms
    a, _, c = ref.cell.lengths()
    lo, hi, n = args.ratios.split(":")
    ratios = np.linspace(float(lo), float(hi), int(n)) * (c / a)
    calcs = [("teacher", teacher)] + [(m, DistilledCalculator(m)) for m in args.models]
    print(f"{args.phase}: teacher's V0 {ref.get_volume() / len(ref):.3f} Å³/atom, c/a {c / a:.4f}")
    print(f"{'c/a':>24s} " + " ".join(f"{r:6.3f}" for r in ratios))
    for f in (float(x) for x in args.volumes.split(",")):
        print(f"V = {f:g} V0")
        for name, calc in calcs:
            e = np.array([energy_at_cell(at_shape(ref, f, r), calc) for r in ratios])
            print(f"{name[-24:]:>24s} " + " ".join(f"{1000 * (x - e.min()):6.1f}" for x in e))


if __name__ == "__main__":
    main()
