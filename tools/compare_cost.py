"""Cost per atom-step of one student artifact against another (e.g. a re-shipped student against
the one it replaces), through ASE, one thread, rattled diamond Si of 512 and 4,096 atoms.

The two are called back to back in each repeat, in alternating order, and the ratio B / A is
taken within each repeat: a machine whose speed drifts between repeats (a shared host) moves
both calls of a repeat together, which a ratio of two medians over the whole run does not
cancel. Prints, per size, both costs (medians), the median of the per-repeat ratios and their
interquartile range.

    git show 44ffd13:mlffd/registry_models/tiny.mlffd.pt > /tmp/tiny-gen1.mlffd.pt
    python tools/compare_cost.py /tmp/tiny-gen1.mlffd.pt tiny [REPEATS]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from mlffd import DistilledCalculator
from mlffd.testing import silicon


def _call(calc: DistilledCalculator, atoms, rep: int) -> float:
    probe = atoms.copy()
    probe.positions += 1e-3 * rep  # a new geometry: nothing cached
    probe.calc = calc
    start = time.perf_counter()
    probe.get_forces()
    return time.perf_counter() - start


def main(a: str, b: str, repeats: int = 30) -> None:
    torch.set_num_threads(1)
    calcs = (DistilledCalculator(a), DistilledCalculator(b))
    for n in (4, 8):
        atoms = silicon(n, rattle=0.05, seed=1)
        for calc in calcs:  # the first call of each warms TorchScript up
            _call(calc, atoms, 0)
        times = np.zeros((repeats, 2))
        for rep in range(repeats):
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for k in order:
                times[rep, k] = _call(calcs[k], atoms, rep + 1)
        ratios = times[:, 1] / times[:, 0]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        ta, tb = np.median(times, axis=0)
        print(f"{len(atoms):5d} atoms: {a} {1e6 * ta / len(atoms):.1f} µs/atom-step, {b} {1e6 * tb / len(atoms):.1f}, "
              f"ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}, {repeats} repeats)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tools/compare_cost.py ARTIFACT_A ARTIFACT_B [REPEATS]")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 30)
