"""Cost per atom-step of one student artifact against another (e.g. a re-shipped student against
the one it replaces), through ASE, one thread, rattled diamond Si of 512 and 4,096 atoms.

Each repeat times a block of consecutive calls of A and one of B, back to back and in
alternating order, and takes the ratio B / A within the repeat: a machine whose speed drifts
between repeats (a shared host) moves both blocks of a repeat together, which a ratio of two
medians over the whole run does not cancel. Blocks rather than single calls, because MD calls
one model again and again: a block measures that steady state, not a model whose caches the
other one has just used. Prints, per size, both costs (medians), the median of the per-repeat
ratios and their interquartile range.

With ``--lammps`` the blocks are LAMMPS ``pair_style mlffd`` NVE MD steps instead (two LAMMPS
instances in this process, one rank, one thread, each timed by LAMMPS' own loop time): the
plugin's cost, where ASE's Python overhead is not in either side. A and B are then artifact files.

    git show 44ffd13:mlffd/registry_models/tiny.mlffd.pt > /tmp/tiny-gen1.mlffd.pt
    python tools/compare_cost.py /tmp/tiny-gen1.mlffd.pt tiny [REPEATS]
    python tools/compare_cost.py /tmp/tiny-gen1.mlffd.pt mlffd/registry_models/tiny.mlffd.pt [REPEATS] --lammps
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlffd import DistilledCalculator
from mlffd.bench.workers import in_process_lammps
from mlffd.lammps import plugin_environment
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


def _ase_blocks(a: str, b: str, atoms, calls: int):
    """Per model, ``block(rep) -> seconds per call`` through DistilledCalculator."""
    calcs = (DistilledCalculator(a), DistilledCalculator(b))
    for calc in calcs:  # the first calls of each warm TorchScript up
        _block(calc, atoms, 0, 2)
    return [lambda rep, calc=calc: _block(calc, atoms, rep, calls) for calc in calcs]


def _lammps_blocks(a: str, b: str, atoms, calls: int, workdir: Path):
    """Per model, ``block(rep) -> seconds per MD step`` of LAMMPS pair_style mlffd (LAMMPS' loop time)."""
    runs = [in_process_lammps(atoms, path, workdir / name) for name, path in (("a", a), ("b", b))]
    for run in runs:  # setup and the first calls of each TorchScript out of the timing
        run(2)
    return [lambda rep, run=run: run(calls) / calls for run in runs]


def main(a: str, b: str, repeats: int = 30, lammps: bool = False) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="compare_cost_") as workdir:
        for n in (4, 8):
            _compare(a, b, silicon(n, rattle=0.05, seed=1), repeats, Path(workdir) / str(n) if lammps else None)


def _compare(a: str, b: str, atoms, repeats: int, lammps_dir: Path | None) -> None:
    """Print both costs and the median per-repeat ratio B / A on ``atoms`` (LAMMPS when ``lammps_dir``)."""
    lammps = lammps_dir is not None
    calls = max(2, 8192 // len(atoms))  # blocks of about 8,192 atom-steps
    blocks = _lammps_blocks(a, b, atoms, calls, lammps_dir) if lammps else _ase_blocks(a, b, atoms, calls)
    times = np.zeros((repeats, 2))
    for rep in range(repeats):
        order = (0, 1) if rep % 2 == 0 else (1, 0)
        for k in order:
            times[rep, k] = blocks[k](rep + 1)
    ratios = times[:, 1] / times[:, 0]
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    ta, tb = np.median(times, axis=0)
    print(f"{len(atoms):5d} atoms ({'LAMMPS' if lammps else 'ASE'}): {a} {1e6 * ta / len(atoms):.1f} µs/atom-step, "
          f"{b} {1e6 * tb / len(atoms):.1f}, ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}, {repeats} repeats of {calls} "
          f"{'steps' if lammps else 'calls'})", flush=True)


if __name__ == "__main__":
    args = [arg for arg in sys.argv[1:] if arg != "--lammps"]
    lammps = len(args) < len(sys.argv) - 1
    if len(args) not in (2, 3):
        sys.exit("usage: python tools/compare_cost.py ARTIFACT_A ARTIFACT_B [REPEATS] [--lammps]")
    repeats = args[2] if len(args) == 3 else "30"
    if not repeats.isdigit() or int(repeats) < 1:
        sys.exit(f"error: REPEATS must be a positive integer, got {repeats!r}")
    if lammps:
        missing = [path for path in args[:2] if not Path(path).is_file()]
        if missing:
            sys.exit(f"error: --lammps takes artifact files; not a file: {missing[0]}")
        if "LAMMPS_PLUGIN_PATH" not in os.environ:  # the lammps module needs libmpi on the loader's path at start
            env = plugin_environment() | {"OMP_NUM_THREADS": "1"}
            if "LAMMPS_PLUGIN_PATH" not in env:  # without it the re-executed script would re-execute itself again
                sys.exit("error: --lammps needs the mlffd LAMMPS plugin (mlffd-lammps); none is installed")
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    main(args[0], args[1], int(repeats), lammps)
