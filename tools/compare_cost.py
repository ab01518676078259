"""Cost per atom-step of one student artifact against another (e.g. a re-shipped student against
the one it replaces), through ASE, one thread, rattled diamond Si of 512 and 4,096 atoms,
interleaved repeats in one process; prints one line per size with the ratio B / A.

    git show 44ffd13:mlffd/registry_models/tiny.mlffd.pt > /tmp/tiny-gen1.mlffd.pt
    python tools/compare_cost.py /tmp/tiny-gen1.mlffd.pt tiny
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from mlffd import DistilledCalculator
from mlffd.testing import silicon


def main(a: str, b: str, repeats: int = 5) -> None:
    torch.set_num_threads(1)
    for n in (4, 8):
        atoms = silicon(n, rattle=0.05, seed=1)
        calcs = {a: DistilledCalculator(a), b: DistilledCalculator(b)}
        times: dict[str, list[float]] = {k: [] for k in calcs}
        for rep in range(repeats + 1):
            for name, calc in calcs.items():
                probe = atoms.copy()
                probe.positions += 1e-3 * rep  # a new geometry: nothing cached
                probe.calc = calc
                start = time.perf_counter()
                probe.get_forces()
                if rep:  # the first call of each warms TorchScript up
                    times[name].append(time.perf_counter() - start)
        ta, tb = np.median(times[a]), np.median(times[b])
        print(f"{len(atoms):5d} atoms: {a} {1e6 * ta / len(atoms):.1f} µs/atom-step, {b} {1e6 * tb / len(atoms):.1f}, "
              f"ratio {tb / ta:.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/compare_cost.py ARTIFACT_A ARTIFACT_B")
    main(sys.argv[1], sys.argv[2])
