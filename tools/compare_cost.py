"""Cost per atom-step of one student artifact against another (e.g. a re-shipped student against
the one it replaces), through ASE, one thread, rattled diamond Si of 512 and 4,096 atoms.

Each repeat times a block of consecutive calls of A and one of B, back to back and in
alternating order, and takes the ratio B / A within the repeat: a machine whose speed drifts
between repeats (a shared host) moves both blocks of a repeat together, which a ratio of two
medians over the whole run does not cancel. Blocks rather than single calls, because MD calls
one model again and again: a block measures that steady state, not a model whose caches the
other one has just used. Prints, per size, both costs (medians), the median of the per-repeat
ratios and their interquartile range.

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


def _block(calc: DistilledCalculator, atoms, rep: int, calls: int) -> float:
    """Mean seconds per call over ``calls`` consecutive calls, each on a new geometry."""
    probes = []
    for k in range(calls):
        probe = atoms.copy()
        probe.positions += 1e-3 * (rep * calls + k)  # a new geometry: nothing cached
        probe.calc = calc
        probes.append(probe)
    start = time.perf_counter()
    for probe in probes:
        probe.get_forces()
    return (time.perf_counter() - start) / calls


def main(a: str, b: str, repeats: int = 30) -> None:
    torch.set_num_threads(1)
    calcs = (DistilledCalculator(a), DistilledCalculator(b))
    for n in (4, 8):
        atoms = silicon(n, rattle=0.05, seed=1)
        calls = max(2, 8192 // len(atoms))  # blocks of about 8,192 atom-steps
        for calc in calcs:  # the first calls of each warm TorchScript up
            _block(calc, atoms, 0, 2)
        times = np.zeros((repeats, 2))
        for rep in range(repeats):
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for k in order:
                times[rep, k] = _block(calcs[k], atoms, rep + 1, calls)
        ratios = times[:, 1] / times[:, 0]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        ta, tb = np.median(times, axis=0)
        print(f"{len(atoms):5d} atoms: {a} {1e6 * ta / len(atoms):.1f} µs/atom-step, {b} {1e6 * tb / len(atoms):.1f}, "
              f"ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}, {repeats} repeats of {calls} calls)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tools/compare_cost.py ARTIFACT_A ARTIFACT_B [REPEATS]")
    repeats = sys.argv[3] if len(sys.argv) == 4 else "30"
    if not repeats.isdigit() or int(repeats) < 1:
        sys.exit(f"error: REPEATS must be a positive integer, got {repeats!r}")
    main(sys.argv[1], sys.argv[2], int(repeats))
