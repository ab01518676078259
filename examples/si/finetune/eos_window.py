"""Diamond's equation of state where mlffd-validate properties fits B and B', student against 7net-0.

Each calculator relaxes the 2-atom diamond cell (cell and positions) and evaluates it at the
fit window's volumes (``md_validation.properties.eos.fit_fractions``: 94-106 % of its own V0,
isotropic; diamond has no free internal coordinate or shape), then fits Birch-Murnaghan as the
property table does (``fit_eos``). Prints V0, B, B' and, per volume, the energy above the fitted
minimum and the pressure: where a student's B' comes from. A quick screen; the property table
relaxes each point too and is the measurement.
Run from the repository root:
    python examples/si/finetune/eos_window.py original
    python examples/si/finetune/eos_window.py runs/si/finetune/original-eos-window/original.mlffd.pt tiny
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from ase.units import GPa

from md_validation.properties.eos import fit_eos, fit_fractions
from md_validation.properties.relax import scaled
from mlffd.calculator import DistilledCalculator
from mlffd.teachers import load_teacher

TEACHER = "sevennet:7net-0"


def window(calc: Calculator) -> tuple[np.ndarray, dict]:
    """Rows (volume Å^3/atom, energy eV/atom, pressure GPa) over the fit window, and the fit."""
    cell = bulk("Si", "diamond", a=5.43)
    cell.calc = calc
    BFGS(FrechetCellFilter(cell), logfile=None).run(fmax=1e-4, steps=200)
    rows = []
    for fraction in fit_fractions():
        point = scaled(cell, fraction)
        point.calc = calc
        pressure = -np.trace(point.get_stress(voigt=False)) / 3 / GPa
        rows.append((point.get_volume() / len(point), point.get_potential_energy() / len(point), pressure))
    table = np.array(rows)
    return table, fit_eos(table[:, 0], table[:, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="shipped names or .mlffd.pt files")
    args = parser.parse_args()
    calcs = {"7net-0": load_teacher(TEACHER)} | {m: DistilledCalculator(m) for m in args.models}
    print("fractions of V0:", " ".join(f"{f:.2f}" for f in fit_fractions()))
    for name, calc in calcs.items():
        table, fit = window(calc)
        print(f"{name}: V0 {fit['V0']:.4f} Å^3/atom, B {fit['B_GPa']:.2f} GPa, B' {fit['Bprime']:.3f}")
        print("  E - E0 (meV/atom):", " ".join(f"{e:7.2f}" for e in (table[:, 1] - fit["E0"]) * 1000))
        print("  P (GPa):          ", " ".join(f"{p:7.3f}" for p in table[:, 2]))


if __name__ == "__main__":
    main()
