"""Student vs GFN2-xTB per MD step (energy and forces) on a periodic box of small molecules.

    python examples/druglike/speed_vs_xtb.py MODEL

The box: 16 water, 6 methanol and 2 DMSO molecules at 0.95 g/cm³ (104 atoms), packed as the
sampler packs its boxes; both calculators in this process, one thread, median of several calls.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mlffd.calculator import DistilledCalculator
from mlffd.sampling.boxes import pack_box
from mlffd.teachers import load_teacher


def median_step(calc, atoms, calls: int) -> float:
    """Median seconds of one energy + forces call, positions moved a little each time (first call not counted)."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    rng = np.random.default_rng(1)
    times = []
    for _ in range(calls):
        atoms.positions += rng.normal(0.0, 0.002, atoms.positions.shape)
        start = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    box = pack_box(["O", "CO", "CS(C)=O"], [16, 6, 2], 0.95, 2.0, np.random.default_rng(0))
    student = median_step(DistilledCalculator(args.model), box, 30)
    teacher = median_step(load_teacher("xtb"), box, 5)
    print(f"{len(box)} atoms ({box.get_chemical_formula()}): student {student * 1e3:.2f} ms/step, "
          f"GFN2-xTB {teacher * 1e3:.0f} ms/step, {teacher / student:.0f}x")


if __name__ == "__main__":
    main()
